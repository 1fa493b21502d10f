# trilho with its notebooks: the image behind the buckets, ingest, train and jupyter services.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[notebook]" \
 && useradd --create-home --uid 1000 trilho
COPY --chown=trilho notebooks /home/trilho/notebooks
USER trilho
WORKDIR /home/trilho
