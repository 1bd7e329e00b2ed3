"""What a customer's query is held to before and after the engine: the words that reach the
server's files, values as JSON, and the kept read-only handles (idle close, the cap on how many,
a write in this process closing them first)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioning_pipelines.errors import Forbidden, InvalidRequest, QueryTooLong
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.ladybug.queries import (
    QueryLimits,
    check_parameters,
    json_value,
)
from provisioning_pipelines.storage.ladybug.queries import run as queries_run
from provisioning_pipelines.storage.ladybug.query_text import check_query

DDL = ["CREATE NODE TABLE Person(id INT64, name STRING, PRIMARY KEY(id))"]


@pytest.mark.parametrize("query", [
    "LOAD FROM 'x.csv' RETURN *", "load with headers (a INT64) from 'x' return *",
    "COPY Person FROM 'x.csv'", "COPY (MATCH (p:Person) RETURN p) TO 'x.csv'",
    "MATCH (p) RETURN p; COPY Person TO 'x.parquet'", "EXPORT DATABASE 'x'",
    "IMPORT DATABASE 'x'", "INSTALL json", "LOAD EXTENSION json", "ATTACH 'x' AS y",
    "DETACH y", "/* a comment */ COPY Person FROM 'x'", "UNINSTALL json", "CHECKPOINT",
    "checkpoint;", "CALL timeout=300; MATCH (p) RETURN p", "CALL threads = 1",
    "RETURN current_setting('home_directory')", "CALL current_setting('file_search_path') "
    "RETURN *"])
def test_a_clause_that_reaches_the_servers_files_is_refused(query: str) -> None:
    with pytest.raises(Forbidden) as refused:
        check_query(query, QueryLimits())
    assert refused.value.field == "query"


@pytest.mark.parametrize("query", [
    "MATCH (copy:Person) RETURN copy", "MATCH (p:Person) RETURN p.load, p.copy AS copy",
    "RETURN 'LOAD FROM x' AS text", 'RETURN "COPY T FROM y" AS text', "RETURN $copy",
    "MATCH (p:Load) RETURN p // COPY T FROM 'x'", "WITH 1 AS attach RETURN attach",
    "MATCH (p:`COPY FROM`) RETURN p", "WITH 1 AS copy RETURN copy AS install",
    "MATCH (p:Person) DETACH DELETE p", "MATCH (p) WITH p AS detach RETURN detach",
    "WITH 'x' AS load RETURN load"])
def test_the_same_words_elsewhere_are_only_words(query: str) -> None:
    assert check_query(query, QueryLimits()) == query


def test_an_empty_or_too_long_query_is_refused_naming_why() -> None:
    for empty in ("", "   ", None, 5):
        with pytest.raises(InvalidRequest):
            check_query(empty, QueryLimits())
    with pytest.raises(QueryTooLong):
        check_query("RETURN 1", QueryLimits(max_query_length=7))


def test_values_become_json() -> None:
    assert json_value(dt.date(2024, 2, 29)) == "2024-02-29"
    assert json_value(dt.datetime(2024, 2, 29, 1, 2, 3, 500)) == "2024-02-29T01:02:03.000500"
    assert json_value(dt.timedelta(days=1, hours=2)) == "P1DT2H"
    assert json_value(dt.timedelta(seconds=90.5)) == "PT1M30.5S"
    assert json_value(dt.timedelta(0)) == "PT0S"
    assert json_value(-dt.timedelta(days=2)) == "-P2D"
    assert json_value(decimal.Decimal("10000000100000000")) == 10000000100000000
    assert json_value(decimal.Decimal("12.5")) == 12.5
    assert json_value(float("nan")) is None and json_value(float("-inf")) is None
    assert json_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_value(b"\xaa\xbb") == "qrs="
    assert json_value({1: "a"}) == [{"key": 1, "value": "a"}]
    assert json_value({"offset": 3, "table": 0}) == "0:3"


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text()
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=5).filter(
                        lambda key: key not in ("_ID", "_LABEL", "_NODES", "_RELS")
                        and key not in ("offset", "table")), inner, max_size=4),
                    max_leaves=20))
def test_json_stays_itself(value: object) -> None:
    assert json_value(value) == value
    json.dumps(json_value(value), allow_nan=False)


def test_readers_close_when_idle_when_too_many_and_before_a_write(tmp_path: Path) -> None:
    engine = LadybugEngine(template_dir=tmp_path / "t", max_readers=2, reader_idle_seconds=60)
    paths = [tmp_path / f"kg{i:016x}.lbug" for i in range(3)]
    for path in paths:
        engine.ensure_database(path, DDL)
    count = "MATCH (p:Person) RETURN count(*)"
    for path in paths:
        assert engine.run_query(path, count, {}, read_only=True,
                                limits=QueryLimits()).rows == [[0]]
    assert len(engine.readers) == 2  # the least recently used went first
    engine.execute(paths[2], ["CREATE (:Person {id: 1, name: 'a'})"])  # a write here
    assert len(engine.readers) == 1
    assert engine.run_query(paths[2], count, {}, read_only=True,
                            limits=QueryLimits()).rows == [[1]]
    assert engine.readers.close_idle(now=float("inf")) == 2
    assert len(engine.readers) == 0


@pytest.mark.parametrize("parameters, field", [
    ({"x": 2 ** 63}, "parameters.x"), ({"x": [1, "a"]}, "parameters.x"),
    ({"x": []}, "parameters.x"), ({"x": {"a": None}}, "parameters.x.a"),
    ({"x": [{"a": 1}, {"b": 2}]}, "parameters.x"),
    ({"x": [[1], ["a"]]}, "parameters.x"), ({"x": [[1, "a"]]}, "parameters.x[0]"),
])
def test_a_parameter_the_engine_would_mangle_is_refused_naming_it(
        parameters: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_parameters(parameters)
    assert refused.value.field == field


def test_objects_in_a_list_keep_their_values_whatever_their_key_order(tmp_path: Path) -> None:
    """LadybugDB puts a list of structs' values under the last one's key order; the objects are
    given one order first, so each value lands under its own key."""
    engine = LadybugEngine()
    path = tmp_path / "graph.lbug"
    engine.ensure_database(path, DDL)
    rows = [{"id": 1, "name": "one"}, {"name": "two", "id": 2}]
    with engine.writing(path) as conn:
        queries_run(conn, "UNWIND $rows AS r CREATE (:Person {id: r.id, name: r.name})",
                    {"rows": rows}, QueryLimits())
    with engine.writing(path) as conn:
        answer = queries_run(conn, "MATCH (p:Person) RETURN p.id, p.name ORDER BY p.id", None,
                             QueryLimits())
    assert answer.rows == [[1, "one"], [2, "two"]]
