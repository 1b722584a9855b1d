import pytest

from taoflow.connectors.errors import RegistryError
from taoflow.daemon.store.registry import Registry
from taoflow.daemon.store.storage import Database


@pytest.fixture
def registry(tmp_path):
    db = Database(tmp_path / "r.db")
    yield Registry(db)
    db.close()


def add(registry: Registry, version: str, parent: str | None = None):
    return registry.register(
        version=version,
        model="bot",
        parent=parent,
        base_model="base",
        base_digest="sha256:x",
        uri=f"file:///a/{version}",
        manifest={"v": version},
    )


def test_lifecycle_and_aliases(registry):
    add(registry, "v1")
    registry.transition("v1", "gated", reason="gate passed")
    registry.promote("v1", reason="first")
    assert registry.alias("bot", "champion") == "v1"
    assert registry.alias("bot", "previous") is None
    add(registry, "v2", parent="v1")
    registry.transition("v2", "gated", reason="ok")
    registry.promote("v2", reason="better")
    assert registry.get("v1").state == "retired"
    assert registry.get("champion", model="bot").version == "v2"
    assert registry.get("previous", model="bot").version == "v1"
    assert registry.get("v2").parent == "v1"
    assert [e.to_state for e in registry.events("v1")] == ["candidate", "gated", "champion", "retired"]


def test_rollback_to_previous_and_to_a_named_version(registry):
    for v in ("v1", "v2", "v3"):
        add(registry, v)
        registry.transition(v, "gated", reason="ok")
        registry.promote(v, reason="ok")
    registry.rollback("bot", reason="bad latency")
    assert registry.alias("bot", "champion") == "v2"
    assert registry.alias("bot", "previous") == "v3"
    assert registry.get("v3").state == "retired"
    registry.rollback("bot", to="v1", reason="known good")
    assert registry.alias("bot", "champion") == "v1"
    assert [a.version for a in registry.versions() if a.state == "champion"] == ["v1"]


def test_forbidden_transitions(registry):
    add(registry, "v1")
    with pytest.raises(RegistryError, match="only a gated adapter"):
        registry.promote("v1", reason="skip the gate")
    registry.transition("v1", "rejected", reason="worse")
    with pytest.raises(RegistryError, match="not an allowed transition"):
        registry.transition("v1", "gated", reason="retry")
    with pytest.raises(RegistryError, match="cannot roll back"):
        registry.rollback("bot", to="v1", reason="x")
    with pytest.raises(RegistryError, match="no previous"):
        registry.rollback("bot", reason="x")
    with pytest.raises(RegistryError, match="use promote"):
        registry.transition("v1", "champion", reason="x")
    with pytest.raises(RegistryError, match="already registered"):
        add(registry, "v1")
    with pytest.raises(RegistryError, match="no adapter version"):
        registry.get("v9")


def test_a_failed_promotion_changes_nothing(registry, monkeypatch):
    add(registry, "v1")
    registry.transition("v1", "gated", reason="ok")
    registry.promote("v1", reason="ok")
    add(registry, "v2")
    registry.transition("v2", "gated", reason="ok")
    original = registry._move

    def crash_on_champion(conn, version, to_state, reason, now):
        original(conn, version, to_state, reason, now)
        if to_state == "champion":
            raise OSError("disk full")

    monkeypatch.setattr(registry, "_move", crash_on_champion)
    with pytest.raises(OSError):
        registry.promote("v2", reason="ok")
    assert registry.alias("bot", "champion") == "v1"
    assert registry.get("v1").state == "champion"
    assert registry.get("v2").state == "gated"
