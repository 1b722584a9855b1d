"""Writes the demo's sample inference logs (daemon/cli/samples/*.jsonl), deterministically.

The logs mimic production traffic of two endpoints in the shapes taoflow ingests:
OpenAI chat-completion exchanges and Databricks inference-table rows (legacy and
AI Gateway columns), plus a few malformed lines that must land in the dead letter.
A third endpoint is an agent (`tool_use.jsonl`): sessions of a travel assistant with three tools, whose next answer
must be a tool call, logged as OpenAI chat, Anthropic Messages and OpenAI Responses exchanges and Databricks rows.
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


# ---------------------------------------------------------------------------- the agent endpoint
AGENT_SYSTEM = "You are a travel assistant. Answer each question by calling one of your tools."
AGENT_TOOLS = [
    {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    {
        "name": "convert_currency",
        "description": "Convert an amount of money from one currency to another.",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "to": {"type": "string", "pattern": "^[A-Z]{3}$"},
            },
            "required": ["amount", "from", "to"],
            "additionalProperties": False,
        },
    },
]
AGENT_CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Sydney", "Toronto", "Nairobi", "Madrid", "Seoul", "Dubai"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "INR"]
AGENT_QUESTIONS = {
    "get_weather": ["What is the weather in {city}?", "How warm is it in {city} today?", "Is it raining in {city}?"],
    "get_time": ["What time is it in {city}?", "What is the local time in {city} now?"],
    "convert_currency": ["Convert {amount} {a} to {b}.", "How much is {amount} {a} in {b}?"],
}


def agent_question(rng: random.Random) -> tuple[str, str, dict]:
    tool = rng.choice(sorted(AGENT_QUESTIONS))
    city, (a, b), amount = rng.choice(AGENT_CITIES), rng.sample(CURRENCIES, 2), rng.choice([5, 20, 50, 100, 250, 1200])
    question = rng.choice(AGENT_QUESTIONS[tool]).format(city=city, amount=amount, a=a, b=b)
    arguments = {"amount": amount, "from": a, "to": b} if tool == "convert_currency" else {"city": city}
    return question, tool, arguments


def agent_result(tool: str, arguments: dict, rng: random.Random) -> str:
    if tool == "get_weather":
        return json.dumps({"temperature_c": rng.randint(-5, 35), "sky": rng.choice(["clear", "cloudy", "rain"])})
    if tool == "get_time":
        return json.dumps({"time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"})
    return json.dumps({"amount": round(arguments["amount"] * rng.uniform(0.5, 2.0), 2), "currency": arguments["to"]})


def agent_session(rng: random.Random) -> list[tuple[str, str, dict, str]]:
    """Two earlier exchanges of the session (a question, the call that answered it, the tool's result), then the
    question to answer: (question, tool, arguments, result) each, the last one's result unused."""
    turns = []
    for _ in range(3):
        question, tool, arguments = agent_question(rng)
        turns.append((question, tool, arguments, agent_result(tool, arguments, rng)))
    return turns


def openai_agent(i: int, turns: list) -> dict:
    messages: list[dict] = [{"role": "system", "content": AGENT_SYSTEM}]
    for k, (question, tool, arguments, result) in enumerate(turns[:-1]):
        call = {
            "id": f"call_{i}_{k}",
            "type": "function",
            "function": {"name": tool, "arguments": json.dumps(arguments)},
        }
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": result},
        ]
    messages.append({"role": "user", "content": turns[-1][0]})
    return {
        "model": "travel-agent",
        "messages": messages,
        "tools": [{"type": "function", "function": t} for t in AGENT_TOOLS],
        "tool_choice": "required",
    }


def anthropic_agent(i: int, turns: list) -> dict:
    messages: list[dict] = []
    for k, (question, tool, arguments, result) in enumerate(turns[:-1]):
        messages += [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": f"tu_{i}_{k}", "name": tool, "input": arguments}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"tu_{i}_{k}", "content": result}]},
        ]
    # Anthropic requires turns to alternate: the next question joins the turn that brought the last result back.
    messages[-1]["content"].append({"type": "text", "text": turns[-1][0]})
    tools = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in AGENT_TOOLS]
    return {
        "model": "travel-agent",
        "max_tokens": 256,
        "system": AGENT_SYSTEM,
        "messages": messages,
        "tools": tools,
        "tool_choice": {"type": "any"},
    }


def responses_agent(i: int, turns: list) -> dict:
    items: list[dict] = []
    for k, (question, tool, arguments, result) in enumerate(turns[:-1]):
        items += [
            {"role": "user", "content": question},
            {"type": "function_call", "call_id": f"fc_{i}_{k}", "name": tool, "arguments": json.dumps(arguments)},
            {"type": "function_call_output", "call_id": f"fc_{i}_{k}", "output": result},
        ]
    items.append({"role": "user", "content": turns[-1][0]})
    return {
        "model": "travel-agent",
        "instructions": AGENT_SYSTEM,
        "input": items,
        "tools": [{"type": "function", **t} for t in AGENT_TOOLS],
        "tool_choice": "required",
    }


def agent_rows(rng: random.Random, count: int) -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    while len(rows) < count:
        turns = agent_session(rng)
        if turns[-1][0] in seen or any(t[0] == turns[-1][0] for t in turns[:-1]):
            continue
        seen.add(turns[-1][0])
        i = len(rows)
        shape = i % 4
        if shape == 0:
            rows.append({"id": f"chatcmpl-agent-{i:05d}", "task": "tool_use", "request": openai_agent(i, turns)})
        elif shape == 1:
            rows.append({"id": f"msg-agent-{i:05d}", "task": "tool_use", "request": anthropic_agent(i, turns)})
        elif shape == 2:
            rows.append({"id": f"resp-agent-{i:05d}", "task": "tool_use", "request": responses_agent(i, turns)})
        else:
            rows.append(
                {
                    "databricks_request_id": f"dbx-agent-{i:05d}",
                    "timestamp_ms": 1_790_000_000_000 + i * 41_000,
                    "status_code": 200,
                    "request": json.dumps(openai_agent(i, turns)),
                    "request_metadata": {"endpoint_name": "tool_use"},
                }
            )
    return rows


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
    with (OUT / "tool_use.jsonl").open("w") as fh:
        for row in agent_rows(random.Random(2027), 160):
            fh.write(json.dumps(row) + "\n")
    with (OUT / "json_extract.jsonl").open("w") as fh:
        for row in [*extraction, *duplicates[1:]]:
            fh.write(json.dumps(row) + "\n")
        fh.write(malformed[1] + "\n" + malformed[2] + "\n")


if __name__ == "__main__":
    main()
