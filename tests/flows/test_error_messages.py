"""An error a user reads (an operation's, a subscription's, a fork's, an API answer) says what
failed, never where: real driver and engine exceptions become a sentence by category
(``flows/public.py``); the engine's own message is redacted; the log's line keeps it all."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ladybug
import pytest
import redis
import sqlalchemy

from provisioning_pipelines.errors import EngineError
from provisioning_pipelines.flows.public import customer_error, describe, detail
from tests.conftest import free_port

WHERE = ("127.0.0.1", "localhost", "db.internal.invalid", "/srv/", "/tmp/", "sqlalche.me")


def assert_nowhere(message: str) -> None:
    for where in WHERE:
        assert where not in message, (where, message)


@pytest.mark.parametrize("url", [
    "postgresql+psycopg2://postgres@127.0.0.1:{port}/x",
    "postgresql+psycopg2://postgres@db.internal.invalid:5432/x",
    "postgresql+psycopg2://postgres@/x?host=/tmp/no-such-socket-folder",
])
def test_a_database_that_cannot_be_reached_is_said_as_such(url: str) -> None:
    port = free_port()
    with pytest.raises(sqlalchemy.exc.OperationalError) as failed:
        sqlalchemy.create_engine(url.format(port=port)).connect()
    assert customer_error(failed.value).code == "database_unavailable"
    assert describe(failed.value) == "the database was unavailable"
    assert "OperationalError" in detail(failed.value)  # the log's line keeps it all


def test_a_redis_error_names_no_host_or_port() -> None:
    port = free_port()
    with pytest.raises(redis.ConnectionError) as failed:
        redis.Redis(host="localhost", port=port, socket_connect_timeout=5).ping()
    described = describe(failed.value)
    assert_nowhere(described)
    assert str(port) not in described and "Error 111" not in described
    assert str(port) in detail(failed.value)


def test_a_file_error_keeps_the_file_name_not_its_folder() -> None:
    with pytest.raises(OSError) as failed:
        Path("/srv/data/graphs/local-standard/kg0123456789abcdef.lbug").read_bytes()
    assert describe(failed.value) == "an internal error"  # which file is the log's
    assert "/srv/data" in detail(failed.value)


def test_an_engine_error_keeps_the_file_name_not_its_folder() -> None:
    folder = tempfile.mkdtemp()
    connection = ladybug.Connection(ladybug.Database(f"{folder}/g.lbug"))
    with pytest.raises(RuntimeError) as failed:
        connection.execute(f"COPY (RETURN 1) TO '{folder}/no/such/x.parquet'")
    error = EngineError(f"fork export of T from g.lbug failed: {failed.value}")
    assert error.to_dict()["message"] == ("fork export of T from g.lbug failed: IO exception: "
                                          "Cannot open file x.parquet: No such file or directory")
    assert describe(error) == "the graph engine could not complete the work"
    assert folder in str(error)  # what is logged keeps the folder
