"""The stores of both kinds (in-memory and real Redis) from the event store's contract tests."""

from tests.storage.conftest import make_store  # noqa: F401
