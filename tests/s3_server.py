"""A real S3 API on 127.0.0.1 for tests: moto's threaded server on a free port, own bucket.

Use the ``s3_server`` fixture (session-scoped, import it into a test module or conftest) or
``start_s3_server()`` from a script. ``S3Server.env`` holds the AWS_* variables a child
process needs to reach it (loopback only; the credentials are dummies moto accepts).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

BUCKET = "persistkit-test"


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    server: Any

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def fresh_url(self) -> str:
        """A new, empty store URL in the bucket (``s3://bucket/<random prefix>``)."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        self.server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_s3_server(bucket: str = BUCKET) -> S3Server:
    """Start moto's S3 server on a free loopback port and create ``bucket`` in it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = S3Server(endpoint, bucket, server)
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return s3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session."""
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point s3fs (in this process) at the test server through the usual AWS_* variables."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    return s3_server
