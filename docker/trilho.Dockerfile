# trilho with its notebooks and Dask: the image behind the buckets, ingest, train, jupyter and dask services.
# Every library comes at the version uv.lock pins, the set the tests ran against.
FROM python:3.11-slim
RUN pip install --no-cache-dir "uv==0.13.9"
ENV UV_PROJECT_ENVIRONMENT=/opt/trilho UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 \
    PATH=/opt/trilho/bin:$PATH
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN uv sync --frozen --no-editable --extra notebook --extra dask \
 && useradd --create-home --uid 1000 trilho
COPY --chown=trilho notebooks /home/trilho/notebooks
USER trilho
WORKDIR /home/trilho
