import re

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.scoring.composite import CompositeScorer, build_scorer
from taoflow.connectors.scoring.verifiers import (
    ArithmeticScorer,
    JsonSchemaScorer,
    LengthScorer,
    PythonScorer,
    RegexScorer,
    SelfConsistencyScorer,
    SqlScorer,
    expression_in,
    values_in_prompt,
)


def rec(text: str, **metadata) -> PromptRecord:
    return PromptRecord("r", "t", (Message("user", text),), metadata=metadata)


@pytest.mark.parametrize(
    ("prompt", "expression"),
    [
        ("What is 17 + 25?", "17 + 25"),
        ("What is 17 plus 25?", "17 + 25"),
        ("Compute (3 + 4) * 2 please", "(3 + 4) * 2"),
        ("12 times 3 = ?", "12 * 3"),
        ("Tell me a joke", None),
        ("In 2026 we had 3 cats", None),
    ],
)
def test_expression_in(prompt, expression):
    assert expression_in(prompt) == expression


def test_arithmetic_scorer():
    scorer = ArithmeticScorer()
    assert scorer.score(rec("What is 17 + 25?"), ["42", "17 + 25 = 42.", "The answer is 32", "forty-two"]) == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert ArithmeticScorer(strict=True).score(rec("17 + 25"), ["42", "= 42"]) == [1.0, 0.0]
    assert scorer.score(rec("Say hi"), ["hi"]) == [None]
    assert scorer.score(rec("Say hi", expression="6 * 7"), ["42"]) == [1.0]
    assert scorer.score(rec("What is 7 / 2?"), ["3.5"]) == [1.0]


SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def test_json_schema_scorer():
    scorer = JsonSchemaScorer(schema=SCHEMA, partial=0.25)
    answers = ['{"name": "Ann"}', '```json\n{"name": "Ann"}\n```', '{"name": 3}', "not json", '{"name": "A"} trailing']
    assert scorer.score(rec("x"), answers) == [1.0, 1.0, 0.25, 0.0, 0.0]
    assert JsonSchemaScorer(schema=SCHEMA, allow_fence=False).score(rec("x"), ['```json\n{"name": "A"}\n```']) == [0.0]
    with pytest.raises(ConfigurationError, match="invalid schema"):
        JsonSchemaScorer(schema={"type": "no-such-type"})


def test_a_schema_comes_from_the_configuration_only_and_never_reaches_out():
    with pytest.raises(ConfigurationError, match=r"needs params\.schema"):
        JsonSchemaScorer()  # a schema in a log record's metadata is input from outside: never used
    remote = {"$ref": "http://127.0.0.1:9/schema.json"}  # nothing listens there: a fetch would fail loudly
    scorer = JsonSchemaScorer(schema=remote)
    with pytest.raises(Exception, match=re.escape("127.0.0.1:9/schema.json")):
        scorer.score(rec("x"), ["{}"])  # unresolvable, not fetched: the composite leaves the answers unscored


def test_regex_and_length_scorers():
    assert RegexScorer(pattern=r"\d+", mode="fullmatch").score(rec("x"), ["42", "a 42"]) == [1.0, 0.0]
    assert RegexScorer(pattern="sorry", negate=True, flags="i").score(rec("x"), ["Sorry!", "ok"]) == [0.0, 1.0]
    assert LengthScorer(max_chars=10).score(rec("x"), ["a" * 5, "a" * 15, "a" * 30]) == [1.0, 0.5, 0.0]
    with pytest.raises(ConfigurationError):
        RegexScorer(pattern="x", mode="match")


SQL_SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);
INSERT INTO users VALUES (1, 'ann', 31), (2, 'bo', 45);
"""


def test_sql_scorer_runs_answers_read_only():
    scorer = SqlScorer(schema=SQL_SCHEMA)
    answers = [
        "SELECT name FROM users WHERE age > 40",
        "```sql\nSELECT count(*) FROM users;\n```",
        "SELECT name FROM users WHERE age > 99",
        "SELECT nme FROM users",
        "DROP TABLE users",
        "SELEC name FROM users",
        "",
    ]
    assert scorer.score(rec("q"), answers) == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_sql_scorer_stops_runaway_queries():
    scorer = SqlScorer(schema=SQL_SCHEMA, max_steps=10_000)
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    assert scorer.score(rec("q"), [endless]) == [0.0]


def test_sql_scorer_rejects_a_schema_that_does_not_run():
    with pytest.raises(ConfigurationError, match="does not run"):
        SqlScorer(schema="CREATE TABLE (")


def test_python_scorer_by_import_path():
    scorer = PythonScorer(callable="tests.connectors.scoring.broken_scorers:contains_yes", kwargs={"word": "ok"})
    assert scorer.score(rec("x"), ["ok then", "no"]) == [1.0, 0.0]
    with pytest.raises(ConfigurationError, match="cannot import"):
        PythonScorer(callable="tests.connectors.scoring.broken_scorers:nope")
    with pytest.raises(ConfigurationError, match=r"package\.module:function"):
        PythonScorer(callable="no_colon")


def test_values_in_prompt():
    record = rec("Text: Maria is 34 years old.")
    assert values_in_prompt(record, '{"name": "Maria", "age": 34}') == 1.0
    assert values_in_prompt(record, '{"name": "Maria", "age": 43}') == 0.5
    assert values_in_prompt(record, "Maria, 34") == 0.0


def test_self_consistency():
    scorer = SelfConsistencyScorer(extract="last_number")
    assert scorer.score(rec("x"), ["= 4", "4", "it is 5", "none"]) == [1.0, 1.0, 0.5, 0.0]
    assert scorer.score(rec("x"), ["4"]) == [None]  # one answer agrees with nothing
    json_scorer = SelfConsistencyScorer(extract="json")
    assert json_scorer.score(rec("x"), ['{"a":1, "b":2}', '{"b": 2, "a": 1}', "{bad"]) == [1.0, 1.0, 0.0]
    with pytest.raises(ConfigurationError):
        SelfConsistencyScorer(extract="vibes")


def test_composite_weights_over_the_scorers_that_answered():
    composite = CompositeScorer([(ArithmeticScorer(), 3.0), (LengthScorer(max_chars=4), 1.0)])
    assert composite.score(rec("What is 2 + 2?"), ["4", "2 + 2 = 4"]) == [1.0, pytest.approx(0.75)]
    # Arithmetic cannot judge a prompt without an expression: length alone decides.
    assert composite.score(rec("hello"), ["hi"]) == [1.0]


@pytest.mark.parametrize("name", ["raises", "returns_text", "returns_nan", "returns_too_much"])
def test_a_broken_scorer_marks_candidates_unscored_and_is_counted(name, caplog):
    broken = PythonScorer(callable=f"tests.connectors.scoring.broken_scorers:{name}")
    composite = CompositeScorer([(ArithmeticScorer(), 1.0), (broken, 1.0)])
    assert composite.score(rec("1 + 1"), ["2", "3"]) == [None, None]
    assert composite.score(rec("1 + 1"), ["2"]) == [None]  # keeps going, never raises
    failures = composite.stats.errors[broken.name] + composite.stats.garbage[broken.name]
    assert failures == 3
    assert composite.stats.unscored == 3
    assert sum(broken.name in r.message for r in caplog.records) == 1  # logged once, counted always


def test_a_scorer_returning_the_wrong_count_is_a_failure():
    class Short:
        name = "short"

        def score(self, record, responses):
            return [1.0]

    composite = CompositeScorer([(Short(), 1.0)])
    assert composite.score(rec("x"), ["a", "b"]) == [None, None]
    assert composite.stats.errors["short"] == 2


def test_build_scorer_errors_name_the_problem():
    with pytest.raises(ConfigurationError, match="unknown scorer type"):
        build_scorer("vibes", {})
    with pytest.raises(ConfigurationError, match="bad params"):
        build_scorer("arithmetic", {"nonsense": 1})


def test_the_ready_made_verifiers_keep_their_documented_path():
    """Configurations written before the connectors were grouped name `taoflow.connectors.verifiers`."""
    old = PythonScorer(callable="taoflow.connectors.verifiers:values_in_prompt")
    new = PythonScorer(callable="taoflow.connectors.scoring.verifiers:values_in_prompt")
    assert old.function is new.function


def test_an_sql_answer_must_read_a_table_the_question_names():
    """Finding: `SELECT * FROM users` scored 1.0 for "How many orders were placed in March?"."""
    schema = SQL_SCHEMA + "CREATE TABLE orders (id INTEGER, placed TEXT); INSERT INTO orders VALUES (1, '2026-03-02');"
    scorer = SqlScorer(schema=schema)
    orders = ["SELECT * FROM users", "SELECT count(*) FROM orders WHERE placed LIKE '2026-03%'"]
    assert scorer.score(rec("How many orders were placed in March?"), orders) == [0.0, 1.0]
    assert scorer.score(rec("Which user is the oldest?"), ["SELECT name FROM users ORDER BY age DESC"]) == [1.0]
    # A question that names no table: any table of the schema will do (what a shape check cannot tell apart).
    assert scorer.score(rec("What is in there?"), ["SELECT * FROM users", "SELECT 1"]) == [1.0, 0.0]
