"""The benchmarks' tasks as they draw them: problems, their prompts, a right and a wrong answer, the verifiers that
check them, and a judge's rubric; records of them for a buffer. The demo's two tasks, and a judged one (capitals:
short factual answers that no program in a round can check)."""

from __future__ import annotations

import json
import random
import re
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.lib.capitals import CAPITALS
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.sources.formats import parse_payload
from taoflow.daemon.cli.demo import SAMPLES
from taoflow.daemon.settings import load_settings

__all__ = ["ROOT", "TAOFLOW", "TASKS", "capital_named", "demo_prompts", "record"]

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


#: Other names an answer may give a place by (after accents are dropped and case folded).
ALIASES = {
    "united states": ("usa", "u.s.", "united states of america", "america"),
    "united kingdom": ("uk", "u.k.", "great britain", "britain"),
    "czech republic": ("czechia",),
    "kyiv": ("kiev",),
    "sanaa": ("sana'a", "sana"),
    "washington": ("washington, d.c.", "washington d.c."),
    "myanmar": ("burma",),
    "north macedonia": ("macedonia",),
}
_BY_COUNTRY = dict(CAPITALS)
_BY_CAPITAL = {capital: country for country, capital in CAPITALS}


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()


def _names(place: str) -> list[str]:
    folded = _folded(place)
    return [folded, *ALIASES.get(folded, ())]


def _word(name: str) -> str:
    """A pattern for `name` as whole words (not "Niger" in "Nigeria")."""
    return rf"(?<![\w]){re.escape(name)}(?![\w])"


def _mentions(text: str, place: str) -> bool:
    return any(re.search(_word(name), text) for name in _names(place))


def _places(text: str, kind: Iterable[str]) -> set[str]:
    """The places of a kind that `text` names, longest names first (so "South Sudan" is not also "Sudan")."""
    found = set()
    for place in sorted(kind, key=len, reverse=True):
        if _mentions(text, place):
            found.add(place)
            for name in sorted(_names(place), key=len, reverse=True):
                text = re.sub(_word(name), " ", text)
    return found


def capital_named(record: PromptRecord, response: str) -> float:
    """The judged task's hidden checker (never a round's scorer): 1.0 where the answer names the right place and no
    other of its kind (no other capital for a capital, no other country for a country), else 0.0."""
    question = record.messages[-1].content
    if (m := re.match(r"What is the capital of (.+)\? ", question)) and m.group(1) in _BY_COUNTRY:
        right, kind = _BY_COUNTRY[m.group(1)], _BY_CAPITAL
    elif (m := re.match(r"(.+) is the capital of which country\? ", question)) and m.group(1) in _BY_CAPITAL:
        right, kind = _BY_CAPITAL[m.group(1)], _BY_COUNTRY
    else:
        raise ValueError(f"not a capitals question: {question[:80]!r}")
    return 1.0 if _places(_folded(response), kind) == {right} else 0.0


class Capitals:
    """Short factual answers: a country's capital, or a capital's country. Rounds score them with an LLM judge only
    (`judged`); the checker that measures them reads the table and is hidden from every round."""

    name = "capitals"
    judged = True
    rubric = (
        "The answer must name the correct capital city (or, where the question asks which country, the correct "
        "country) and nothing else. A wrong place, several places, or no name scores 0."
    )
    #: Where the held-out, validation and training problems start (both questions of a country stay together).
    layout = (0, 48, 112)

    def __init__(self) -> None:
        self.verifier = [{"type": "python", "params": {"callable": "bench.lib.tasks:capital_named"}}]

    def problems(self, rng: random.Random) -> list:
        countries = [country for country, _ in CAPITALS]
        rng.shuffle(countries)
        return [(country, direction) for country in countries for direction in ("capital", "country")]

    def prompt(self, problem) -> str:
        country, direction = problem
        if direction == "capital":
            return f"What is the capital of {country}? Answer with the name only."
        return f"{_BY_COUNTRY[country]} is the capital of which country? Answer with the name only."

    def right(self, problem) -> str:
        country, direction = problem
        return _BY_COUNTRY[country] if direction == "capital" else country

    def wrong(self, problem, rng: random.Random) -> str:
        pool = _BY_CAPITAL if problem[1] == "capital" else _BY_COUNTRY
        return rng.choice([p for p in pool if p != self.right(problem)])

    def judge(self, url: str, model: str) -> list[dict[str, Any]]:
        """A round's scorers: the LLM judge at `url` (relative: all of a prompt's candidates in one call)."""
        params = {"base_url": url.rstrip("/") + "/v1", "model": model, "rubric": self.rubric, "mode": "relative"}
        return [{"type": "judge", "params": {**params, "max_tokens": 120, "concurrency": 4}}]


TASKS = {"arithmetic": Arithmetic, "json_extract": JsonExtract, "capitals": Capitals}


def record(task, i: int, problem) -> PromptRecord:
    return PromptRecord(f"bench-{i}", task.name, (Message("user", task.prompt(problem)),))


def demo_prompts(count: int) -> list[PromptRecord]:
    """The demo's own sample prompts, half arithmetic and half json_extract."""
    records = []
    for name in ("arithmetic.jsonl", "json_extract.jsonl"):
        lines = (SAMPLES / name).read_text().splitlines()
        records += [parse_payload(line) for line in lines[: count // 2]]
    return records
