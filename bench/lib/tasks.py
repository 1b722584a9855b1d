"""The demo's two tasks as benchmarks draw them: problems, their prompts, a right and a wrong answer, the verifiers
that check them, and a judge's rubric; records of them for a buffer."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.sources.formats import parse_payload
from taoflow.daemon.cli.demo import SAMPLES
from taoflow.daemon.settings import load_settings

__all__ = ["ROOT", "TAOFLOW", "TASKS", "demo_prompts", "record"]

ROOT = Path(__file__).resolve().parents[2]
#: The `taoflow` command of the interpreter running the benchmark (its virtualenv's).
TAOFLOW = Path(sys.executable).parent / "taoflow"
NAMES = ["Anna", "Tom", "Omar", "Hana", "Lucas", "Maria", "Chloe", "Elena", "Priya", "Yusuf", "Li Wei", "Sven"]
JOBS = ["baker", "nurse", "dentist", "teacher", "farmer", "chef", "pilot", "engineer"]
CITIES = ["Cairo", "Quito", "Lisbon", "Oslo", "Perth", "Osaka", "Riga", "Lima"]


class Arithmetic:
    name = "arithmetic"
    rubric = "The answer must state the correct sum of the two numbers. A wrong or missing sum scores 0."

    def __init__(self) -> None:
        self.verifier = [{"type": "arithmetic"}]

    def problems(self, rng: random.Random) -> list:
        return list(dict.fromkeys((rng.randint(10, 99), rng.randint(10, 99)) for _ in range(2000)))

    def prompt(self, problem) -> str:
        return f"What is {problem[0]} + {problem[1]}?"

    def right(self, problem) -> str:
        return f"{problem[0]} + {problem[1]} = {problem[0] + problem[1]}"

    def wrong(self, problem, rng: random.Random) -> str:
        a, b = problem
        return rng.choice([f"{a} + {b} = {a + b + rng.randint(1, 20)}", f"It is {a * b}."])


class JsonExtract:
    name = "json_extract"
    rubric = (
        'The answer must be only a JSON object {"name": <the person\'s name>, "age": <their age as an integer>} with '
        "exactly the values in the text. Anything else, extra keys, prose or a wrong value scores 0."
    )

    def __init__(self) -> None:
        demo = load_settings(ROOT / "daemon" / "cli" / "samples" / "demo.yaml")
        self.verifier = [s.model_dump(mode="json") for s in demo.score.tasks["json_extract"]]

    def problems(self, rng: random.Random) -> list:
        draws = ((rng.choice(NAMES), rng.randint(18, 90), rng.choice(JOBS), rng.choice(CITIES)) for _ in range(4000))
        return list(dict.fromkeys(draws))

    def prompt(self, problem) -> str:
        name, age, job, city = problem
        return (
            'Extract the person\'s name and age from the text and reply with only a JSON object with keys "name" '
            f'(string) and "age" (integer).\n\nText: {name} is {age} years old and works as a {job} in {city}.'
        )

    def right(self, problem) -> str:
        return json.dumps({"name": problem[0], "age": problem[1]})

    def wrong(self, problem, rng: random.Random) -> str:
        name, age, job, city = problem
        return rng.choice(
            [
                json.dumps({"name": name, "age": age + rng.randint(1, 9)}),
                json.dumps({"name": name, "age": age, "job": job}),
                f"{name} is {age} years old.",
                json.dumps({"name": city, "age": age}),
            ]
        )


TASKS = {"arithmetic": Arithmetic, "json_extract": JsonExtract}


def record(task, i: int, problem) -> PromptRecord:
    return PromptRecord(f"bench-{i}", task.name, (Message("user", task.prompt(problem)),))


def demo_prompts(count: int) -> list[PromptRecord]:
    """The demo's own sample prompts, half arithmetic and half json_extract."""
    records = []
    for name in ("arithmetic.jsonl", "json_extract.jsonl"):
        lines = (SAMPLES / name).read_text().splitlines()
        records += [parse_payload(line) for line in lines[: count // 2]]
    return records
