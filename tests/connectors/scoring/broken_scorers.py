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
