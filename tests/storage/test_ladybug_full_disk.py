"""The engine on a disk that runs out of room (a real tmpfs, filled): what a failed checkpoint
leaves beside a file never stops the file being read once there is room again."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning_pipelines.errors import EngineError, StorageFull
from provisioning_pipelines.storage.ladybug import LadybugEngine, sidecars
from tests.full_disk import SmallDisk, small_disk, unfinished_checkpoint

__all__ = ["small_disk"]

DDL = ["CREATE NODE TABLE T(id INT64, s STRING, PRIMARY KEY(id))"]
ROWS = 5000
WRITE = (f"UNWIND range(1, {ROWS}) AS i CREATE (:T {{id: i, "
         "s: 'a string long enough to take some pages of the file ' + string(i)})")


def a_database(disk: SmallDisk) -> tuple[LadybugEngine, Path]:
    engine = LadybugEngine()
    path = disk.root / "kg0123456789abcdef.lbug"
    engine.create_database(path, DDL)
    return engine, path


def test_a_write_handle_closed_on_a_full_disk_leaves_the_file_readable(
        small_disk: SmallDisk) -> None:
    engine, path = a_database(small_disk)
    engine.execute(path, [WRITE])
    small_disk.fill(0)

    with pytest.raises(EngineError), engine.writing(path) as conn:  # what a backup does first
        conn.execute("CHECKPOINT")

    assert sidecars(path) == []  # LadybugDB left an empty .shadow; it held nothing
    assert engine.count_rows(path) == {"T": ROWS}  # on the disk that is still full


@pytest.mark.parametrize("leave", [1_000_000, 2_500_000], ids=["shadow-half-written",
                                                                "file-half-overwritten"])
def test_a_checkpoint_cut_short_by_a_full_disk_is_finished_by_the_next_read(
        small_disk: SmallDisk, leave: int) -> None:
    engine, path = a_database(small_disk)
    left = unfinished_checkpoint(path, WRITE, small_disk, leave=leave)
    assert ".shadow" in left

    with pytest.raises(StorageFull, match=r"ran out of disk space.*free space on its host"):
        engine.count_rows(path)
    small_disk.empty()

    assert engine.count_rows(path) == {"T": ROWS}
    assert sidecars(path) == []
