"""What a schema's DDL declares: its fingerprint and its tables, without opening a database."""

from __future__ import annotations

import re

from provisioning_pipelines.services.schemas import schema_ddl
from provisioning_pipelines.storage.ladybug import TableInfo, ddl_fingerprint, expected_tables


def test_fingerprint_is_stable_and_whitespace_insensitive() -> None:
    ddl = schema_ddl(["crm"])
    fingerprint = ddl_fingerprint(ddl)
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    spaced = ["  " + s.replace(" ", "\n   ") + " ;" for s in ddl]
    assert ddl_fingerprint(spaced) == fingerprint
    assert ddl_fingerprint([*ddl, ""]) == fingerprint
    assert ddl_fingerprint(schema_ddl(["accounting"])) != fingerprint
    assert ddl_fingerprint(list(reversed(ddl))) != fingerprint
    # Statement boundaries matter: joining two statements is a different schema.
    assert ddl_fingerprint(["A B", "C"]) != ddl_fingerprint(["A", "B C"])


def test_expected_tables_are_read_from_the_create_statements() -> None:
    ddl = ["CREATE NODE TABLE `Person`(`id` STRING, PRIMARY KEY (`id`))",
           "create rel table if not exists KNOWS(FROM Person TO Person)",
           "CREATE NODE TABLE Company(code INT64, PRIMARY KEY (code))"]
    assert expected_tables(ddl) == [TableInfo("Person", "NODE"), TableInfo("KNOWS", "REL"),
                                    TableInfo("Company", "NODE")]
