"""An S3-compatible object store on 127.0.0.1 for tests: moto's S3 server (a real HTTP server speaking the
S3 REST protocol, run in a thread), so the artifact store's `s3://` path runs through s3fs/aiobotocore
exactly as against AWS S3 or MinIO. Moto emulates S3; it is not AWS (no IAM, no eventual consistency)."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

from servers.openai_server import free_port


@contextmanager
def s3_server(bucket: str | None = None):
    """Yields {endpoint_url, bucket, key, secret, region} of a fresh server that holds one empty bucket.
    Moto keeps its buckets in process-wide memory shared by every server it starts, so each server gets a
    bucket of its own name."""
    bucket = bucket or f"tuneforge-{uuid.uuid4().hex[:12]}"
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    settings = {"endpoint_url": f"http://127.0.0.1:{port}", "bucket": bucket, "key": "test-access-key",
                "secret": "test-secret-key", "region": "us-east-1"}
    try:
        boto3.client("s3", endpoint_url=settings["endpoint_url"], aws_access_key_id=settings["key"],
                     aws_secret_access_key=settings["secret"], region_name=settings["region"]).create_bucket(Bucket=bucket)
        yield settings
    finally:
        server.stop()
