"""What a schema's DDL declares: its fingerprint and its tables, without opening a database."""

from __future__ import annotations

import re
from pathlib import Path

from provisioning_pipelines.services.graphs.schemas import available_extensions, schema_ddl
from provisioning_pipelines.storage.ladybug import (
    LadybugEngine,
    TableInfo,
    ddl_fingerprint,
    expected_tables,
    node_properties,
)


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


def test_node_properties_read_from_the_ddl_match_what_a_built_file_holds(tmp_path: Path) -> None:
    """Every node table of every extension (and a custom schema with nested types): the names
    read from the DDL are the ones LadybugDB reports for the file the DDL builds."""
    engine = LadybugEngine(template_dir=tmp_path / "templates")
    custom = ["CREATE NODE TABLE `Deal`(`code` STRING, `terms` MAP(STRING, INT64), "
              "`price` DECIMAL(10, 2), `tags` STRING[], PRIMARY KEY (`code`))"]
    for index, ddl in enumerate([schema_ddl(available_extensions()), custom]):
        path = tmp_path / f"g{index}.lbug"
        engine.create_database(path, ddl)
        for table in expected_tables(ddl):
            if table.kind != "NODE":
                continue
            built = [row["name"] for row in
                     engine.query(path, f"CALL table_info('{table.name}') RETURN *")]
            assert node_properties(ddl, table.name) == built, table.name
    assert node_properties(custom, "Nothing") == []
