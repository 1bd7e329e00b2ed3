"""The LadybugDB engine against real database files in ``tmp_path``."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ladybug
import pytest

from provisioning_pipelines.errors import Conflict, EngineError, NotFound
from provisioning_pipelines.services.graphs.custom_schemas import custom_schema_ddl
from provisioning_pipelines.services.graphs.schemas import schema_ddl
from provisioning_pipelines.storage.ladybug import (
    LadybugEngine,
    TableInfo,
    ddl_fingerprint,
    expected_tables,
    sidecars,
)

DDL = schema_ddl(["accounting", "crm", "supply_chain"])
BASE = schema_ddl([])


@pytest.fixture
def engine(tmp_path: Path) -> LadybugEngine:
    return LadybugEngine(template_dir=tmp_path / "templates")


@pytest.fixture
def direct(tmp_path: Path) -> LadybugEngine:
    return LadybugEngine(template_dir=tmp_path / "templates", use_templates=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def _names(tables: list[TableInfo]) -> list[tuple[str, str]]:
    return [(t.name, t.kind) for t in tables]


def _leftovers(folder: Path) -> list[str]:
    """Temp files and fork directories the engine must never leave behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _columns(path: Path, table: str) -> list[tuple[str, str]]:
    db = ladybug.Database(str(path), read_only=True, buffer_pool_size=16 << 20)
    conn = ladybug.Connection(db)
    try:
        rows = conn.execute(f"CALL table_info('{table}') RETURN *").get_all()
        return [(row[1], row[2]) for row in rows]
    finally:
        conn.close()
        db.close()


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------- create


def test_create_lists_the_expected_tables(engine: LadybugEngine, data: Path) -> None:
    path = data / "kg0123456789abcdef.lbug"
    engine.create_database(path, DDL)
    tables = engine.list_tables(path)
    assert _names(tables) == _names(expected_tables(DDL))
    names = {t.name for t in tables}
    assert {"Entity", "Document", "Tag", "TAGGED", "Account", "Contact", "Product"} <= names
    assert ("SUPPLIES", "REL") in _names(tables)
    assert engine.exists(path)
    assert sorted(os.listdir(data)) == [path.name]  # no temp file, no WAL


def test_every_catalogue_schema_and_a_custom_schema_build(
    engine: LadybugEngine, data: Path
) -> None:
    everything = schema_ddl(["accounting", "crm", "supply_chain", "procurement"])
    engine.create_database(data / "all.lbug", everything)
    assert len(engine.list_tables(data / "all.lbug")) == len(expected_tables(everything))
    custom = custom_schema_ddl(
        {
            "nodes": [
                {
                    "name": "Person",
                    "properties": [
                        {"name": "id", "type": "UUID"},
                        {"name": "tags", "type": "STRING[]"},
                    ],
                    "primary_key": "id",
                }
            ],
            "relationships": [{"name": "KNOWS", "from": "Person", "to": "Person"}],
        }
    )
    engine.create_database(data / "custom.lbug", custom)
    assert _names(engine.list_tables(data / "custom.lbug")) == [
        ("Person", "NODE"),
        ("KNOWS", "REL"),
    ]


def test_template_and_direct_paths_make_the_same_database(
    engine: LadybugEngine, direct: LadybugEngine, data: Path, tmp_path: Path
) -> None:
    engine.create_database(data / "templated.lbug", DDL)
    direct.create_database(data / "direct.lbug", DDL)
    assert engine.list_tables(data / "templated.lbug") == direct.list_tables(data / "direct.lbug")
    for table in ("Entity", "TAGGED", "Invoice", "SUPPLIES"):
        assert _columns(data / "templated.lbug", table) == _columns(data / "direct.lbug", table)
    template = tmp_path / "templates" / f"{ddl_fingerprint(DDL)}.lbug"
    assert engine.template_path(DDL) == template
    assert template.is_file()
    assert sidecars(template) == []  # no WAL beside the template
    assert direct.template_path(DDL) is None


def test_a_templated_copy_is_an_independent_database(engine: LadybugEngine, data: Path) -> None:
    first, second = data / "first.lbug", data / "second.lbug"
    engine.create_database(first, DDL)
    engine.create_database(second, DDL)
    # Open the copy read-write, insert, close; reopen and read it back.
    db = ladybug.Database(str(first), buffer_pool_size=16 << 20)
    conn = ladybug.Connection(db)
    conn.execute("CREATE (:Entity {identifier: 'e1', name: 'Acme'})")
    conn.close()
    db.close()
    assert engine.query(first, "MATCH (e:Entity) RETURN e.name AS name") == [{"name": "Acme"}]
    assert engine.query(second, "MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 0}]
    template = engine.template_path(DDL)
    assert template is not None
    assert engine.query(template, "MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 0}]
    assert sidecars(template) == [] and sidecars(first) == []


def test_create_refuses_an_existing_path(engine: LadybugEngine, data: Path) -> None:
    path = data / "g.lbug"
    engine.create_database(path, DDL)
    engine.execute(path, ["CREATE (:Tag {name: 'keep'})"])
    with pytest.raises(Conflict):
        engine.create_database(path, DDL)
    assert engine.query(path, "MATCH (t:Tag) RETURN t.name AS name") == [{"name": "keep"}]


@pytest.mark.parametrize("use_templates", [True, False])
def test_concurrent_creation_in_threads(tmp_path: Path, data: Path, use_templates: bool) -> None:
    engine = LadybugEngine(template_dir=tmp_path / "templates", use_templates=use_templates)
    paths = [data / f"kg{i:016x}.lbug" for i in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda p: engine.create_database(p, DDL), paths))
    expected = _names(expected_tables(DDL))
    for path in paths:
        assert _names(engine.list_tables(path)) == expected
    assert sorted(os.listdir(data)) == sorted(p.name for p in paths)
    if use_templates:
        assert sorted(p.suffix for p in (tmp_path / "templates").iterdir()) == [".lbug", ".lock"]


def test_concurrent_creation_across_processes_shares_one_template(
    tmp_path: Path, data: Path
) -> None:
    code = f"""
        import sys
        from pathlib import Path
        from provisioning_pipelines.services.graphs.schemas import schema_ddl
        from provisioning_pipelines.storage.ladybug import LadybugEngine
        engine = LadybugEngine(template_dir=Path({str(tmp_path / "templates")!r}))
        for i in range(3):
            engine.create_database(Path({str(data)!r}) / f"p{{sys.argv[1]}}_{{i}}.lbug",
                                   schema_ddl(["accounting", "crm", "supply_chain"]))
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(n)],
            cwd=Path(__file__).resolve().parents[2],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(list(data.glob("*.lbug"))) == 12
    for path in data.glob("*.lbug"):
        assert engine_tables(path) == _names(expected_tables(DDL))
    assert len(list((tmp_path / "templates").glob("*.lbug"))) == 1


def engine_tables(path: Path) -> list[tuple[str, str]]:
    return _names(LadybugEngine().list_tables(path))


@pytest.mark.parametrize("use_templates", [True, False])
def test_failed_create_leaves_no_file(tmp_path: Path, data: Path, use_templates: bool) -> None:
    engine = LadybugEngine(template_dir=tmp_path / "templates", use_templates=use_templates)
    bad = [*BASE[:2], "CREATE NODE TABLE Broken(id STRING PRIMARY KEY, x NOTATYPE)", *BASE[2:]]
    path = data / "bad.lbug"
    with pytest.raises(EngineError) as caught:
        engine.create_database(path, bad)
    assert "statement 3" in caught.value.message
    assert "CREATE NODE TABLE Broken" in caught.value.message
    assert not path.exists()
    assert os.listdir(data) == []
    templates = tmp_path / "templates"
    if use_templates:  # the template build was tried, failed, and left nothing behind
        assert templates.is_dir()
        assert list(templates.glob("*.lbug")) == [] and _leftovers(templates) == []
    else:
        assert not templates.exists()
    # The engine still works for a good schema afterwards.
    engine.create_database(path, DDL)
    assert engine.exists(path)


def test_create_ignores_an_orphaned_wal(engine: LadybugEngine, data: Path) -> None:
    path = data / "g.lbug"
    _crash_with_wal(path, data)
    os.remove(path)  # the file went, its WAL stayed: it must not be replayed into the new one
    assert sidecars(path)
    engine.create_database(path, DDL)
    assert _names(engine.list_tables(path)) == _names(expected_tables(DDL))


def _crash_with_wal(path: Path, cwd: Path) -> None:
    """Write to ``path`` in a process that dies without closing: leaves a real WAL."""
    result = _run(
        f"""
        import os, ladybug
        db = ladybug.Database({str(path)!r}, buffer_pool_size=16 << 20)
        conn = ladybug.Connection(db)
        conn.execute("CREATE NODE TABLE Junk(id INT64 PRIMARY KEY)")
        conn.execute("CREATE (:Junk {{id: 1}})")
        os._exit(0)
        """,
        cwd,
    )
    assert result.returncode == 0, result.stderr
    assert Path(f"{path}.wal").exists()


# --------------------------------------------------------------------------- ensure / delete


def test_ensure_creates_then_keeps(engine: LadybugEngine, data: Path) -> None:
    path = data / "g.lbug"
    assert engine.ensure_database(path, DDL) is True
    engine.execute(path, ["CREATE (:Entity {identifier: 'e1'})"])
    assert engine.ensure_database(path, DDL) is False
    assert engine.count_rows(path)["Entity"] == 1


def _truncated(path: Path, good: bytes) -> None:
    path.write_bytes(good[:4096])


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "half", "empty", "other schema", "crashed writer"],
)
def test_ensure_rebuilds_after_a_crash(engine: LadybugEngine, data: Path, damage: str) -> None:
    reference = data / "reference.lbug"
    engine.create_database(reference, DDL)
    good = reference.read_bytes()
    path = data / "g.lbug"
    if damage == "garbage":
        path.write_bytes(b"not a database" * 100)
    elif damage == "truncated":
        path.write_bytes(good[:4096])
    elif damage == "half":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other schema":
        engine.create_database(path, BASE)
    else:
        _crash_with_wal(path, data)
    assert engine.ensure_database(path, DDL) is True
    assert _names(engine.list_tables(path)) == _names(expected_tables(DDL))
    assert sidecars(path) == []
    engine.execute(path, ["CREATE (:Entity {identifier: 'ok'})"])
    assert engine.count_rows(path)["Entity"] == 1
    assert _leftovers(data) == []


def test_delete_removes_the_file_and_its_sidecars(engine: LadybugEngine, data: Path) -> None:
    path, neighbour, child = data / "g.lbug", data / "g.lbug2", data / "g_sub.lbug"
    engine.create_database(path, DDL)
    engine.create_database(child, DDL)
    neighbour.write_bytes(b"keep me")
    _crash_with_wal(path, data)  # a real WAL beside the file
    Path(f"{path}.shadow").write_bytes(b"x")
    Path(f"{path}.checkpoint.intent.lock").write_bytes(b"")
    assert engine.delete_database(path) is True
    assert not path.exists() and sidecars(path) == []
    assert neighbour.exists() and child.exists()
    assert engine.delete_database(path) is False
    assert not engine.exists(path)


# --------------------------------------------------------------------------- execute / query


def test_execute_binds_parameters_and_is_atomic(engine: LadybugEngine, data: Path) -> None:
    path = data / "g.lbug"
    engine.create_database(path, DDL)
    hostile = "Robert'); MATCH (n) DETACH DELETE n; //"
    engine.execute(
        path,
        [
            (
                "CREATE (:Entity {identifier: $id, name: $name, aliases: $aliases})",
                {"id": "e1", "name": hostile, "aliases": ["a", "b"]},
            ),
            (
                "CREATE (:Entity {identifier: $id, created_at: $at})",
                {"id": "e2", "at": dt.datetime(2024, 5, 1, 12, 0)},
            ),
        ],
    )
    rows = engine.query(
        path,
        "MATCH (e:Entity) WHERE e.identifier = $id RETURN e.name AS name, e.aliases AS a",
        {"id": "e1"},
    )
    assert rows == [{"name": hostile, "a": ["a", "b"]}]
    with pytest.raises(EngineError) as caught:
        engine.execute(
            path,
            [
                "CREATE (:Entity {identifier: 'e3'})",
                "CREATE (:Entity {identifier: 'e1'})",  # duplicate primary key
            ],
        )
    assert "statement 2" in caught.value.message
    assert engine.count_rows(path)["Entity"] == 2  # e3 rolled back with it


def test_missing_files_raise_not_found_and_are_not_created(
    engine: LadybugEngine, data: Path
) -> None:
    path = data / "missing.lbug"
    with pytest.raises(NotFound):
        engine.execute(path, ["CREATE (:Entity {identifier: 'x'})"])
    with pytest.raises(NotFound):
        engine.query(path, "RETURN 1")
    with pytest.raises(NotFound):
        engine.list_tables(path)
    with pytest.raises(NotFound):
        engine.count_rows(path)
    assert os.listdir(data) == []


def test_query_is_read_only(engine: LadybugEngine, data: Path) -> None:
    path = data / "g.lbug"
    engine.create_database(path, DDL)
    with pytest.raises(EngineError):
        engine.query(path, "CREATE (:Entity {identifier: 'x'})")
    assert engine.count_rows(path)["Entity"] == 0


def test_no_writable_handle_outlives_a_call(engine: LadybugEngine, data: Path) -> None:
    path = data / "g.lbug"
    engine.create_database(path, DDL)
    engine.execute(path, ["CREATE (:Entity {identifier: 'e1'})"])
    engine.query(path, "MATCH (e:Entity) RETURN e.identifier")
    other = data / "other.lbug"
    engine.create_database(other, DDL)
    engine.copy_tables(path, other)
    # Another process can take the write lock on both files right away.
    result = _run(
        f"""
        import ladybug
        for p in ({str(path)!r}, {str(other)!r}):
            db = ladybug.Database(p, buffer_pool_size=16 << 20)
            conn = ladybug.Connection(db)
            conn.execute("CREATE (:Tag {{name: 'from-another-process'}})")
            conn.close(); db.close()
        """,
        data,
    )
    assert result.returncode == 0, result.stderr
    assert engine.count_rows(path)["Tag"] == 1


# --------------------------------------------------------------------------- fork


@pytest.fixture
def parent(engine: LadybugEngine, data: Path) -> Path:
    path = data / "parent.lbug"
    engine.create_database(path, DDL)
    at = dt.datetime(2024, 1, 2, 3, 4, 5)
    engine.execute(
        path,
        [
            (
                "UNWIND range(1, 50) AS i CREATE (:Entity {identifier: 'e' + string(i), "
                "name: 'Company ' + string(i), aliases: ['c' + string(i)], created_at: $at})",
                {"at": at},
            ),
            "UNWIND range(1, 5) AS i CREATE (:Document {identifier: 'd' + string(i), title: 'T'})",
            "CREATE (:Tag {name: 'energy'}), (:Tag {name: 'retail'})",
            "CREATE (:Product {identifier: 'p1', sku: 'SKU-1'})",
            "MATCH (a:Entity), (b:Entity) WHERE a.identifier = 'e1' AND b.identifier <> 'e1' "
            "CREATE (a)-[:SUPPLIES {tier: 1, since: date('2020-01-01')}]->(b)",
            "MATCH (e:Entity), (t:Tag {name: 'energy'}) CREATE (e)-[:TAGGED]->(t)",
            "MATCH (d:Document), (t:Tag {name: 'retail'}) CREATE (d)-[:TAGGED]->(t)",
            "MATCH (d:Document), (e:Entity {identifier: 'e2'}) "
            "CREATE (d)-[:MENTIONS {confidence: 0.5}]->(e)",
            "MATCH (e:Entity {identifier: 'e3'}), (p:Product) CREATE (e)-[:MAKES]->(p)",
        ],
    )
    return path


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if n}


def test_fork_copies_every_table(engine: LadybugEngine, parent: Path, data: Path) -> None:
    child = data / "parent_sub.lbug"
    engine.create_database(child, DDL)
    copied = engine.copy_tables(parent, child)
    parent_counts = engine.count_rows(parent)
    assert engine.count_rows(child) == parent_counts
    assert _nonzero(copied) == _nonzero(parent_counts)
    assert set(copied) == {t.name for t in engine.list_tables(parent)}
    assert parent_counts["TAGGED"] == 55  # both connections of the multi-pair rel table
    query = (
        "MATCH (e:Entity) RETURN e.identifier AS id, e.name AS name, e.aliases AS aliases, "
        "e.created_at AS at ORDER BY id"
    )
    assert engine.query(child, query) == engine.query(parent, query)
    rel = (
        "MATCH (a)-[r:SUPPLIES]->(b) RETURN a.identifier, b.identifier, r.tier, r.since "
        "ORDER BY b.identifier"
    )
    assert engine.query(child, rel) == engine.query(parent, rel)
    assert _leftovers(data) == []


def test_fork_a_list_of_tables(engine: LadybugEngine, parent: Path, data: Path) -> None:
    child = data / "child.lbug"
    engine.create_database(child, DDL)
    copied = engine.copy_tables(parent, child, tables=["entity", "SUPPLIES", "TAGGED", "MENTIONS"])
    # TAGGED and MENTIONS need Tag and Document, which are not copied.
    assert copied == {"Entity": 50, "SUPPLIES": 49}
    assert _nonzero(engine.count_rows(child)) == {"Entity": 50, "SUPPLIES": 49}


def test_fork_with_exclude_patterns(engine: LadybugEngine, parent: Path, data: Path) -> None:
    child = data / "child.lbug"
    engine.create_database(child, DDL)
    copied = engine.copy_tables(parent, child, exclude=["Doc*", "MENTIONS", "make?"])
    counts = _nonzero(engine.count_rows(child))
    assert counts == {"Entity": 50, "Tag": 2, "Product": 1, "SUPPLIES": 49, "TAGGED": 50}
    assert "Document" not in copied and "MAKES" not in copied and "MENTIONS" not in copied
    assert copied["TAGGED"] == 50  # only the Entity->Tag connection


def test_fork_only_tables_present_in_both(engine: LadybugEngine, parent: Path, data: Path) -> None:
    child = data / "child.lbug"
    engine.create_database(child, BASE)
    copied = engine.copy_tables(parent, child)
    assert set(copied) == {t.name for t in expected_tables(BASE)}
    assert engine.count_rows(child) == {
        name: n for name, n in engine.count_rows(parent).items() if name in copied
    }


def test_fork_is_all_or_nothing(engine: LadybugEngine, parent: Path, data: Path) -> None:
    child = data / "child.lbug"
    engine.create_database(child, DDL)
    engine.execute(child, ["CREATE (:Tag {name: 'retail'})"])  # clashes with the parent's key
    before = engine.count_rows(child)
    with pytest.raises(EngineError) as caught:
        engine.copy_tables(parent, child)
    assert re.search(r"fork load \d+ failed", caught.value.message)
    assert engine.count_rows(child) == before
    assert _leftovers(data) == []


def test_fork_from_a_missing_parent(engine: LadybugEngine, data: Path) -> None:
    child = data / "child.lbug"
    engine.create_database(child, DDL)
    with pytest.raises(NotFound):
        engine.copy_tables(data / "nope.lbug", child)
    with pytest.raises(NotFound):
        engine.copy_tables(child, data / "nope.lbug")
    assert not (data / "nope.lbug").exists()
    assert _leftovers(data) == []


def test_fork_of_a_wide_table_sizes_the_buffer_pool(engine: LadybugEngine, data: Path) -> None:
    """Bulk COPY needs ~1-2 MiB of buffer pool per column; a 16 MiB pool fails on wide tables."""
    properties = [{"name": "id", "type": "STRING"}] + [
        {"name": f"c{i}", "type": "STRING[]"} for i in range(60)
    ]
    ddl = custom_schema_ddl(
        {"nodes": [{"name": "Wide", "properties": properties, "primary_key": "id"}]}
    )
    source, target = data / "wide.lbug", data / "wide_copy.lbug"
    engine.create_database(source, ddl)
    engine.create_database(target, ddl)
    engine.execute(source, ["UNWIND range(1, 100) AS i CREATE (:Wide {id: string(i), c59: ['x']})"])
    assert engine.copy_tables(source, target) == {"Wide": 100}


# --------------------------------------------------------------------------- robustness


def test_a_damaged_template_is_rebuilt(tmp_path: Path, data: Path) -> None:
    LadybugEngine(template_dir=tmp_path / "templates").create_database(data / "a.lbug", DDL)
    template = tmp_path / "templates" / f"{ddl_fingerprint(DDL)}.lbug"
    template.write_bytes(b"\0" * 4096)
    fresh = LadybugEngine(template_dir=tmp_path / "templates")  # nothing cached yet
    fresh.create_database(data / "b.lbug", DDL)
    assert _names(fresh.list_tables(data / "b.lbug")) == _names(expected_tables(DDL))
    assert _names(fresh.list_tables(template)) == _names(expected_tables(DDL))


def test_an_unusable_template_dir_falls_back_to_the_ddl(tmp_path: Path, data: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the template folder should be")
    engine = LadybugEngine(template_dir=blocker)
    engine.create_database(data / "g.lbug", DDL)
    assert _names(engine.list_tables(data / "g.lbug")) == _names(expected_tables(DDL))


def test_a_writer_in_another_process_is_waited_for(tmp_path: Path, data: Path) -> None:
    path = data / "g.lbug"
    LadybugEngine().create_database(path, DDL)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time, ladybug
                db = ladybug.Database({str(path)!r}, buffer_pool_size=16 << 20)
                conn = ladybug.Connection(db)
                print("locked", flush=True)
                time.sleep(1.0)
                conn.close(); db.close()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        impatient = LadybugEngine(lock_timeout=0.2)
        with pytest.raises(EngineError, match="Could not set lock"):
            impatient.execute(path, ["CREATE (:Tag {name: 'a'})"])
        # Readers are never blocked by the writer.
        assert impatient.count_rows(path)["Tag"] == 0
        LadybugEngine(lock_timeout=10).execute(path, ["CREATE (:Tag {name: 'b'})"])
    finally:
        holder.wait(timeout=30)
    assert LadybugEngine().count_rows(path)["Tag"] == 1


def test_writers_in_threads_of_one_process_take_turns(engine: LadybugEngine, data: Path) -> None:
    """LadybugDB lets one process open a file read-write twice (and corrupt it); we must not."""
    path = data / "g.lbug"
    engine.create_database(path, DDL)

    def write(i: int) -> None:
        engine.execute(path, [("CREATE (:Entity {identifier: $id})", {"id": f"e{i}"})])
        engine.query(path, "MATCH (e:Entity) RETURN count(e) AS n")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(write, range(24)))
    assert engine.count_rows(path)["Entity"] == 24
    assert sidecars(path) == []
