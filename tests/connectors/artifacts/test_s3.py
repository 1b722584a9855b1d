"""The S3 artifact store against a real S3-compatible HTTP server (moto in server mode)."""

import boto3
import pytest

from taoflow.connectors.artifacts.s3 import S3ArtifactStore
from taoflow.connectors.errors import ArtifactError
from tests.connectors.artifacts.test_local import adapter


@pytest.fixture
def store(s3_endpoint, tmp_path, request):
    bucket = f"adapters-{request.node.name.replace('_', '-')[:40].lower()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return S3ArtifactStore(bucket, "taoflow/adapters", tmp_path / "cache", endpoint_url=s3_endpoint)


def test_put_fetch_exists_and_immutability(store, tmp_path):
    assert not store.exists("bot-r0001")
    uri = store.put("bot-r0001", adapter(tmp_path))
    assert uri == f"s3://{store.bucket}/taoflow/adapters/bot-r0001/"
    assert store.exists("bot-r0001")
    fetched = store.fetch("bot-r0001")
    assert fetched.parent == store.cache_dir and (fetched / "adapter_model.safetensors").read_bytes() == b"weights"
    with pytest.raises(ArtifactError, match="immutable"):
        store.put("bot-r0001", adapter(tmp_path, "b"))
    with pytest.raises(ArtifactError, match="not in"):
        store.fetch("bot-r0002")
    with pytest.raises(ArtifactError, match="invalid adapter version"):
        store.fetch("../etc")


def test_a_half_uploaded_version_does_not_exist(store, tmp_path):
    # Everything but adapter_config.json (uploaded last): what a crash mid-put leaves behind.
    s3 = boto3.client("s3", endpoint_url=store._s3.meta.endpoint_url)
    s3.put_object(Bucket=store.bucket, Key="taoflow/adapters/bot-r0003/adapter_model.safetensors", Body=b"w")
    assert not store.exists("bot-r0003")
    with pytest.raises(ArtifactError, match="not in"):
        store.fetch("bot-r0003")
    store.put("bot-r0003", adapter(tmp_path))  # the retry of the crashed put completes it
    assert store.fetch("bot-r0003").is_dir()


def test_exists_means_that_key_and_fetch_reads_past_a_thousand_keys(store, tmp_path):
    s3 = boto3.client("s3", endpoint_url=store._s3.meta.endpoint_url)
    # A key the marker's name is a prefix of is not the marker.
    s3.put_object(Bucket=store.bucket, Key="taoflow/adapters/bot-r0004/adapter_config.json.bak", Body=b"{}")
    assert not store.exists("bot-r0004")
    # 1100 stray keys sort before the marker: a single listing (1000 keys) would not see it.
    for i in range(1100):
        s3.put_object(Bucket=store.bucket, Key=f"taoflow/adapters/bot-r0005/.a-{i:04d}", Body=b"")
    for path in sorted(adapter(tmp_path).iterdir()):
        s3.put_object(Bucket=store.bucket, Key=f"taoflow/adapters/bot-r0005/{path.name}", Body=path.read_bytes())
    assert store.exists("bot-r0005") and (store.fetch("bot-r0005") / "adapter_config.json").is_file()
