"""The graph engine over LadybugDB files: ``files`` (on disk), ``schema`` (what DDL declares),
``cypher`` (text and rows), ``engine`` (create, query, delete) and ``fork`` (copy rows)."""

from provisioning_pipelines.storage.ladybug.engine import (
    DEFAULT_BUFFER_POOL_MB,
    LadybugEngine,
    MiB,
    Statement,
)
from provisioning_pipelines.storage.ladybug.files import has_sidecars, sidecars
from provisioning_pipelines.storage.ladybug.schema import (
    TableInfo,
    ddl_fingerprint,
    expected_tables,
    node_properties,
    normalise_statement,
)

__all__ = [
    "DEFAULT_BUFFER_POOL_MB",
    "LadybugEngine",
    "MiB",
    "Statement",
    "TableInfo",
    "ddl_fingerprint",
    "expected_tables",
    "has_sidecars",
    "node_properties",
    "normalise_statement",
    "sidecars",
]
