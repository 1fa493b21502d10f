# trilho with its notebooks and Dask: the image behind the buckets, ingest, train, jupyter and dask services.
# Every library comes at the version uv.lock pins, the set the tests ran against.
FROM python:3.11-slim
RUN pip install --no-cache-dir "uv==0.13.9"
ENV UV_PROJECT_ENVIRONMENT=/opt/trilho UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 \
    PATH=/opt/trilho/bin:$PATH
WORKDIR /src
# the locked libraries first, in a layer of their own: a change to trilho's code rebuilds only the layer below.
# A venv first, so the environment has pip (MLflow records its version with every model it logs; a
# user's `pip install` in Jupyter needs it too); sync adds the locked set beside it.
COPY pyproject.toml uv.lock ./
RUN python -m venv /opt/trilho \
 && uv sync --frozen --inexact --no-install-project --no-editable --extra notebook --extra dask \
 && useradd --create-home --uid 1000 trilho
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --inexact --no-editable --extra notebook --extra dask
COPY --chown=trilho notebooks /home/trilho/notebooks
USER trilho
WORKDIR /home/trilho
