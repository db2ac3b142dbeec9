"""A real S3 API on 127.0.0.1 (moto's server) for tests that write outputs to a bucket."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from batchscribe import storage

KEY = SECRET = "testing"
REGION = "eu-west-1"


@contextmanager
def moto_s3(*buckets: str) -> Iterator[dict[str, dict[str, Any]]]:
    """A moto server with `buckets` created and nothing else; yields the `storage_options` that reach it.

    moto keeps its buckets in the process, shared by every server it starts: the state is reset first.

    `environment(options)` gives the same settings as the environment a CLI process reads (botocore's).
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=30).close()
    options = {
        "s3": {
            "endpoint_url": f"http://{host}:{port}",
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"region_name": REGION},
            "skip_instance_cache": True,
        }
    }
    try:
        for bucket in buckets:
            storage.filesystem(f"s3://{bucket}", options)[0].mkdir(bucket)
        yield options
    finally:
        server.stop()


def environment(options: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The environment variables that point a separate process's S3 client at the server of `options`."""
    s3 = options["s3"]
    return {
        "AWS_ENDPOINT_URL": s3["endpoint_url"],
        "AWS_ACCESS_KEY_ID": s3["key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret"],
        "AWS_DEFAULT_REGION": s3["client_kwargs"]["region_name"],
    }
