# trilho with its notebooks and Dask: the image behind the buckets, ingest, train, jupyter and dask services.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[notebook,dask]" \
 && useradd --create-home --uid 1000 trilho
COPY --chown=trilho notebooks /home/trilho/notebooks
USER trilho
WORKDIR /home/trilho
