"""A small real filesystem (a tmpfs the test mounts) to fill, for "No space left on device".

``small_disk`` mounts one under the test's temp folder and unmounts it afterwards; where mounting
is not permitted the test is skipped, saying so. ``unfinished_checkpoint`` leaves a database as a
process whose checkpoint ran out of room leaves it: the writer runs in a child process (a write
whose WAL cannot grow aborts its process), commits, waits while the disk is filled, and closes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SIZE_MIB = 48


@dataclass
class SmallDisk:
    root: Path

    @property
    def filler(self) -> Path:
        return self.root / "filler"

    def free(self) -> int:
        return shutil.disk_usage(self.root).free

    def fill(self, leave: int = 0) -> None:
        """Take every byte but ``leave`` (to the page)."""
        with self.filler.open("ab") as out:
            while (free := self.free()) > leave + 4096:
                try:
                    out.write(b"\0" * min(free - leave, 1 << 20))
                    out.flush()
                except OSError:
                    break

    def release(self, nbytes: int) -> None:
        """Give ``nbytes`` back."""
        size = self.filler.stat().st_size
        with self.filler.open("r+b") as out:
            out.truncate(max(0, size - nbytes))

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs",
                            str(root)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"a small filesystem to fill cannot be mounted here: "
                    f"{mount.stderr.strip() or mount.returncode}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


_WRITER = """
import sys, ladybug
path, statement = sys.argv[1], sys.argv[2]
db = ladybug.Database(path, buffer_pool_size=64 << 20, max_db_size=1 << 30)
conn = ladybug.Connection(db)
conn.execute(statement)
print("committed", flush=True)
sys.stdin.readline()
conn.close()
db.close()  # its checkpoint runs out of room; the close says nothing
print("closed", flush=True)
"""


def unfinished_checkpoint(path: Path, statement: str, disk: SmallDisk, *,
                          leave: int = 256 * 1024) -> list[str]:
    """Run ``statement`` on ``path`` in a child process whose closing checkpoint meets a disk
    filled to ``leave`` bytes; the names of the sidecars it left."""
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), statement],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "committed"
    disk.fill(leave)
    writer.stdin.write("close\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "closed"
    assert writer.wait(timeout=60) == 0
    return sorted(p.name[len(path.name):] for p in path.parent.iterdir()
                  if p.name.startswith(path.name + "."))
