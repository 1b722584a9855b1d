import json

import pytest

from taoflow.connectors.artifacts.local import LocalArtifactStore, check_adapter_dir, validate_version
from taoflow.connectors.errors import ArtifactError


def adapter(tmp_path, name="a", peft_type="LORA"):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": 8}))
    (directory / "adapter_model.safetensors").write_bytes(b"weights")
    return directory


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/etc", "", ".hidden", "a..b", "x" * 200, "a b", "v1\n"])
def test_unsafe_versions_are_refused(name):
    with pytest.raises(ArtifactError, match="invalid adapter version"):
        validate_version(name)


def test_put_fetch_and_immutability(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    uri = store.put("bot-r0001", adapter(tmp_path))
    assert uri.startswith("file://") and store.exists("bot-r0001")
    assert (store.fetch("bot-r0001") / "adapter_model.safetensors").read_bytes() == b"weights"
    with pytest.raises(ArtifactError, match="immutable"):
        store.put("bot-r0001", adapter(tmp_path, "b"))
    with pytest.raises(ArtifactError, match="not in"):
        store.fetch("missing")
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_adapter_checks(tmp_path):
    check_adapter_dir(adapter(tmp_path))
    with pytest.raises(ArtifactError, match="not a LoRA"):
        check_adapter_dir(adapter(tmp_path, "p", peft_type="PROMPT_TUNING"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match=r"adapter_config\.json is missing"):
        check_adapter_dir(empty)
    no_weights = adapter(tmp_path, "nw")
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="no adapter weights"):
        check_adapter_dir(no_weights)


def test_symlinks_are_not_stored(tmp_path):
    directory = adapter(tmp_path)
    (directory / "leak").symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="symlink"):
        LocalArtifactStore(tmp_path / "store").put("v1", directory)
