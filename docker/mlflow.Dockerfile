# The MLflow server: pinned mlflow plus boto3 (the official image lacks boto3, so S3 artifacts fail
# there) and the PostgreSQL driver for its store, at the versions uv.lock pins (a test holds them equal).
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow==3.17.2" "boto3==1.44.8" "psycopg[binary]==3.3.9" \
 && useradd --create-home --uid 1000 mlflow && mkdir /mlflow && chown mlflow /mlflow
USER mlflow
WORKDIR /mlflow
EXPOSE 5000
