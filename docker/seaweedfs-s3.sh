#!/bin/sh
# Start SeaweedFS with an authenticated S3 gateway on :9000; the identity comes from the environment.
set -eu
: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
umask 077
python - <<'PY' > /tmp/s3-identities.json
import json, os
print(json.dumps({"identities": [{"name": "trilho", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    "credentials": [{"accessKey": os.environ["MINIO_ROOT_USER"], "secretKey": os.environ["MINIO_ROOT_PASSWORD"]}]}]}))
PY
exec weed server -dir=/data -ip.bind=0.0.0.0 -filer -s3 -s3.port=9000 -s3.config=/tmp/s3-identities.json \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=1024 -volume.max=0
