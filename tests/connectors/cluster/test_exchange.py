"""The exchange on the real S3 endpoint (moto's server) and on a shared folder."""

from __future__ import annotations

import os

import boto3
import pytest

from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.errors import ArtifactError, ConfigurationError, TemporaryError
from tests.support.brokers import moto_s3


@pytest.fixture(scope="module")
def s3_exchange():
    with moto_s3() as endpoint:
        os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="rounds")
        yield Exchange("s3://rounds/prefix", endpoint_url=endpoint)


@pytest.fixture(params=["s3", "folder"])
def exchange(request, s3_exchange, tmp_path):
    root = s3_exchange if request.param == "s3" else Exchange(str(tmp_path / "exchange"))
    return root.child("model", f"r0001-{request.node.name[-20:].replace('[', '-').replace(']', '')}")


def test_rows_travel_as_parquet_with_their_types(exchange):
    rows = [{"request_id": f"r{i}", "record": '{"a": "\\u00e9"}', "n": i} for i in range(5)]
    exchange.write_rows("inputs/prompts.parquet", rows, {"request_id": "string", "record": "string", "n": "int64"})
    assert list(exchange.read_rows("inputs/prompts.parquet")) == rows


def test_json_files_and_folders_round_trip_and_can_be_removed(exchange, tmp_path):
    exchange.write_json("outputs/score.json", {"examples": 3})
    assert exchange.exists("outputs/score.json") and exchange.read_json("outputs/score.json") == {"examples": 3}
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    exchange.put_dir("outputs/adapter", adapter)
    home = exchange.get_dir("outputs/adapter", tmp_path / "home")
    assert sorted(p.name for p in home.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (home / "adapter_model.safetensors").read_bytes() == b"\0" * 1000
    exchange.remove("outputs/adapter")
    exchange.remove("outputs/score.json")
    assert not exchange.exists("outputs/adapter/adapter_config.json") and not exchange.exists("outputs/score.json")
    exchange.remove("outputs/never-written")  # nothing there: nothing to do


def test_a_file_larger_than_the_limit_is_not_read(exchange):
    exchange.write_bytes("outputs/big.json", b"1" * 2000)
    with pytest.raises(TemporaryError, match="larger than 1000 bytes"):
        exchange.read_bytes("outputs/big.json", limit=1000)


def test_names_that_climb_out_of_the_folder_are_refused(exchange):
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(ValueError):
            exchange.child(bad)
    with pytest.raises(ConfigurationError, match="neither"):
        Exchange("relative/path")


def test_a_shared_folder_refuses_links_out_of_it(tmp_path):
    """Finding: a job could make the daemon copy a daemon-side file into the adapter with a link on the folder."""
    exchange = Exchange(str(tmp_path / "exchange")).child("model", "r0001")
    exchange.write_bytes("outputs/adapter/adapter_config.json", b"{}")
    secret = tmp_path / "daemon-side-secret"
    secret.write_text("the daemon's own file")
    os.symlink(secret, exchange.path("outputs/adapter/adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match="link"):
        exchange.get_dir("outputs/adapter", tmp_path / "home")
    with pytest.raises(ArtifactError, match="link"):
        exchange.read_bytes("outputs/adapter/adapter_model.safetensors")
    os.unlink(exchange.path("outputs/adapter/adapter_model.safetensors"))
    os.symlink(tmp_path, exchange.path("outputs/elsewhere"))  # a linked folder: its files are outside
    with pytest.raises(ArtifactError, match="link"):
        exchange.read_bytes("outputs/elsewhere/daemon-side-secret")
    assert exchange.get_dir("outputs/adapter", tmp_path / "home") == tmp_path / "home"
    assert (tmp_path / "home" / "adapter_config.json").read_bytes() == b"{}"


def test_a_folders_file_over_the_limit_is_not_copied(exchange, tmp_path):
    exchange.write_bytes("outputs/adapter/weights.bin", b"x" * 5000)
    with pytest.raises(TemporaryError, match="larger than 4096 bytes"):
        exchange.get_dir("outputs/adapter", tmp_path / "home", limit=4096)


def test_a_rounds_folder_is_removed_whole(exchange):
    exchange.write_json("inputs/spec.json", {"round": 1})
    exchange.write_rows("outputs/scored/part-0.parquet", [{"request_id": "r1"}], {"request_id": "string"})
    exchange.remove_all()
    assert not exchange.exists("inputs/spec.json") and not exchange.exists("outputs/scored")
    exchange.remove_all()  # gone already: nothing to do
