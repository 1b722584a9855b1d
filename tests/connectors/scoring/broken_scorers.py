"""Verifiers that misbehave on purpose, loaded by import path like a user's would be."""

from taoflow.connectors.records import PromptRecord


def raises(record: PromptRecord, response: str) -> float:
    raise RuntimeError("verifier crashed")


def returns_text(record: PromptRecord, response: str) -> object:
    return "very good"


def returns_nan(record: PromptRecord, response: str) -> float:
    return float("nan")


def returns_too_much(record: PromptRecord, response: str) -> float:
    return 7.0


def contains_yes(record: PromptRecord, response: str, *, word: str = "yes") -> bool:
    return word in response


def hoards_memory(record: PromptRecord, response: str) -> float:
    """Allocates gigabytes, as an answer can make a verifier do."""
    hoard = bytearray(4 << 30)
    return float(len(hoard) > 0)


def calls_out(record: PromptRecord, response: str) -> float:
    """Opens a connection to somewhere (a schema $ref, a user's lookup): refused in the sandbox."""
    import socket

    socket.create_connection(("127.0.0.1", 9), timeout=1)
    return 1.0


def writes_file(record: PromptRecord, response: str, *, path: str = "") -> float:
    with open(path, "w") as fh:
        fh.write(response)
    return 1.0
