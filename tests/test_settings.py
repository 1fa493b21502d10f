import pytest

from trilho import ConfigError, load_settings


def test_defaults_are_the_embedded_lake_and_sqlite(workdir):
    s = load_settings(env_file=None)
    assert s.lake == "lake" and s.tracking_uri == "sqlite:///mlflow.db"


def test_standard_variable_names(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    s = load_settings(env_file=None)
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert s.aws_access_key_id.get_secret_value() == "key"
    assert "secret-value" not in repr(s)  # secrets never print


def test_reference_env_file_names(workdir):
    (workdir / ".env").write_text(
        "AWS_ACCESS_KEY=minio\nAWS_SECRET_KEY=minio-secret\nMINIO_URL=http://minio:9000\n"
        "BUCKET_DATA=data-bucket\nBUCKET_MLFLOW=mlflow\nMLFLOW_TRACKING_URI=http://mlflow:5000\n"
    )
    s = load_settings()
    assert s.aws_access_key_id.get_secret_value() == "minio"
    assert s.aws_secret_access_key.get_secret_value() == "minio-secret"
    assert s.s3_endpoint_url == "http://minio:9000"
    assert s.lake == "s3://data-bucket"  # the reference named only the bucket
    assert s.bucket_mlflow == "mlflow"


def test_explicit_lake_wins_over_bucket(workdir, monkeypatch):
    monkeypatch.setenv("BUCKET_DATA", "data-bucket")
    monkeypatch.setenv("TRILHO_LAKE", "/tmp/elsewhere")
    assert load_settings(env_file=None).lake == "/tmp/elsewhere"


def test_bad_setting_names_the_key(workdir, monkeypatch):
    monkeypatch.setenv("TRILHO_N_JOBS", "zero")
    with pytest.raises(ConfigError, match="TRILHO_N_JOBS = 'zero'"):
        load_settings(env_file=None)
