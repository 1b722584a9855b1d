"""taoflow state as tests arrange it: prompts counted from outside, held-out prompts, adapters in the registry."""

from __future__ import annotations


def buffered_prompts(db) -> int:  # type: ignore[no-untyped-def]
    """Prompts in a state database that another process is writing (0 until it exists)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM prompts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def store_adapter(state, model: str, name: str, directory, base, *, gated: bool) -> None:  # type: ignore[no-untyped-def]
    """Put a trained adapter into the artifact store and the registry, as a round's register step does."""
    uri = state.store.put(name, directory)
    state.registry.register(
        version=name, model=model, parent=None, base_model=base.reference, base_digest=base.digest, uri=uri, manifest={}
    )
    if gated:
        state.registry.transition(name, "gated", reason="test: passed the gate")


def hold_out(state, records, *, source: str = "test") -> None:  # type: ignore[no-untyped-def]
    """Buffer prompts as held-out ones (the gate's and the canary smoke's evaluation set)."""
    from taoflow.daemon.store.buffer import buffer_row

    state.buffer.add_rows([buffer_row(r, None) for r in records], source=source)
    with state.db.transaction() as conn:
        conn.executemany("UPDATE prompts SET split='heldout' WHERE request_id=?", [(r.request_id,) for r in records])
