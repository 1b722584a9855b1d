"""Writes the demo's sample inference logs (daemon/cli/samples/*.jsonl), deterministically.

The logs mimic production traffic of two endpoints in the shapes taoflow ingests:
OpenAI chat-completion exchanges and Databricks inference-table rows (legacy and
AI Gateway columns), plus a few malformed lines that must land in the dead letter.
Run: python scripts/make_samples.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "daemon" / "cli" / "samples"
ARITHMETIC = [
    "What is {a} + {b}?",
    "Calculate {a} + {b}.",
    "{a} + {b} = ?",
    "What is {a} plus {b}?",
    "Add {a} + {b}. Reply with the result.",
]
NAMES = [
    "Maria",
    "Omar",
    "Li Wei",
    "Anna",
    "Kofi",
    "Sofia",
    "Ravi",
    "Elena",
    "Tom",
    "Aiko",
    "Lucas",
    "Fatima",
    "Jonas",
    "Priya",
    "Mateo",
    "Chloe",
    "Yusuf",
    "Ingrid",
    "Diego",
    "Hana",
]
JOBS = ["nurse", "teacher", "pilot", "chef", "lawyer", "farmer", "designer", "engineer", "baker", "dentist"]
CITIES = ["Lisbon", "Cairo", "Osaka", "Lima", "Oslo", "Accra", "Pune", "Quito", "Riga", "Perth"]
EXTRACT = (
    "Extract the person's name and age from the text and reply with only a JSON object with keys "
    '"name" (string) and "age" (integer).\n\nText: {name} is {age} years old and works as a {job} in {city}.'
)


def openai_exchange(rng: random.Random, i: int, task: str, prompt: str) -> dict:
    created = 1_790_000_000 + i * 37
    return {
        "id": f"chatcmpl-{task}-{i:05d}",
        "task": task,
        "request": {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.7,
        },
        "response": {
            "id": f"chatcmpl-{task}-{i:05d}",
            "object": "chat.completion",
            "created": created,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "(logged answer)"}, "finish_reason": "stop"}
            ],
        },
    }


def databricks_legacy(rng: random.Random, i: int, task: str, prompt: str) -> dict:
    return {
        "databricks_request_id": f"dbx-{task}-{i:05d}",
        "client_request_id": None,
        "date": "2026-11-20",
        "timestamp_ms": 1_790_000_000_000 + i * 37_000,
        "status_code": 200,
        "execution_time_ms": rng.randint(80, 900),
        "sampling_fraction": 1.0,
        "request": json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": 128}),
        "response": json.dumps({"choices": [{"message": {"role": "assistant", "content": "(logged answer)"}}]}),
        "request_metadata": {"endpoint_name": task, "model_name": "smollm2", "model_version": "1"},
    }


def databricks_gateway(rng: random.Random, i: int, task: str, prompt: str) -> dict:
    return {
        "request_date": "2026-11-20",
        "databricks_request_id": f"gw-{task}-{i:05d}",
        "request_time": f"2026-11-20T{i % 24:02d}:{i % 60:02d}:00.000Z",
        "status_code": 200,
        "sampling_fraction": 1.0,
        "execution_duration_ms": rng.randint(80, 900),
        "request": json.dumps({"messages": [{"role": "user", "content": prompt}]}),
        "response": json.dumps({"choices": [{"message": {"role": "assistant", "content": "(logged answer)"}}]}),
        "served_entity_id": task,
        "logging_error_codes": [],
        "requester": "service-principal-42",
    }


SHAPES = [openai_exchange, databricks_legacy, databricks_gateway]


def main() -> None:
    rng = random.Random(2026)
    OUT.mkdir(parents=True, exist_ok=True)
    arithmetic, extraction = [], []
    seen: set[tuple[int, int]] = set()
    while len(arithmetic) < 260:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        prompt = rng.choice(ARITHMETIC).format(a=a, b=b)
        arithmetic.append(SHAPES[len(arithmetic) % 3](rng, len(arithmetic), "arithmetic", prompt))
    people: set[tuple[str, int]] = set()
    while len(extraction) < 200:
        name, age = rng.choice(NAMES), rng.randint(19, 78)
        if (name, age) in people:
            continue
        people.add((name, age))
        prompt = EXTRACT.format(name=name, age=age, job=rng.choice(JOBS), city=rng.choice(CITIES))
        extraction.append(SHAPES[len(extraction) % 3](rng, len(extraction), "json_extract", prompt))
    # Production logs repeat themselves: a few exact and near duplicates the buffer must fold.
    duplicates = [arithmetic[3], extraction[5]]
    malformed = [
        '{"request": {"messages": [{"role": "user", "content": "truncated',
        '{"databricks_request_id": "dbx-bad-1", "request": "{not json", "status_code": 200}',
        '{"request": {"model": "x", "messages": []}}',
        '["not", "an", "object"]',
    ]
    with (OUT / "arithmetic.jsonl").open("w") as fh:
        for row in [*arithmetic, *duplicates[:1]]:
            fh.write(json.dumps(row) + "\n")
        fh.write(malformed[0] + "\n" + malformed[3] + "\n")
    with (OUT / "json_extract.jsonl").open("w") as fh:
        for row in [*extraction, *duplicates[1:]]:
            fh.write(json.dumps(row) + "\n")
        fh.write(malformed[1] + "\n" + malformed[2] + "\n")


if __name__ == "__main__":
    main()
