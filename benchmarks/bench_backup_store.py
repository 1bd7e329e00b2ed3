"""Keeping a backup in the S3 store and fetching it back, against ``cp`` of the same file and a
plain upload and download with the same client, side by side in one run.

    python -m benchmarks.bench_backup_store [--gib 1] [--rounds 3] [--folder PATH]

A real SeaweedFS server (``weed``) is started for the run on loopback, its data in the folder
the file is in. Each round runs, one after another: ``cp`` of the file, the store's ``put``
(its manifest and checksum lookups around boto3's multipart upload), a plain ``upload_file``
with the same client and transfer settings; then the way back: ``cp``, the store's ``get``
(download, sha256 of what came, rename), a plain ``download_file``. Printed: medians, and
the store's ratio to each. The file is random bytes (a graph file does not compress either).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from provisioning_pipelines.storage.backup_store.s3 import S3Store
from tests.seaweed import SeaweedServer  # the tests' own launcher of the real server


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _write(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = 8 * 1024 * 1024
    with path.open("wb") as out:
        for _ in range(size // block):
            data = os.urandom(block)
            digest.update(data)
            out.write(data)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        root = Path(folder)
        source = root / "graph.lbug"
        sha = _write(source, int(args.gib * 1024 ** 3))
        server = SeaweedServer(root / "seaweed").start()
        try:
            store = S3Store(server.bucket("bench-backups"), "graphs",
                            endpoint_url=server.endpoint_url, timeout_seconds=120)
            up: dict[str, list[float]] = {"cp": [], "store put": [], "plain upload": []}
            down: dict[str, list[float]] = {"cp": [], "store get": [], "plain download": []}
            copy, back = root / "copy.lbug", root / "back.lbug"
            client, bucket, transfer = store.client, store.bucket, store.transfer
            for round_ in range(args.rounds):
                key, plain = f"kgbench/{round_}", f"plain/{round_}"
                up["cp"].append(_timed(partial(subprocess.run, ["cp", str(source), str(copy)],
                                               check=True)))
                up["store put"].append(_timed(partial(store.put, key, source, sha256=sha,
                                                      expires_at=None)))
                up["plain upload"].append(_timed(partial(client.upload_file, str(source),
                                                         bucket, plain, Config=transfer)))
                down["cp"].append(_timed(partial(subprocess.run, ["cp", str(copy), str(back)],
                                                 check=True)))
                back.unlink()
                down["store get"].append(_timed(partial(store.get, key, back)))
                back.unlink()
                down["plain download"].append(_timed(partial(
                    client.download_file, bucket, plain, str(back), Config=transfer)))
                back.unlink()
                copy.unlink()
            print(f"a {args.gib:g} GiB file, {args.rounds} rounds; SeaweedFS on loopback, "
                  f"multipart parts of {store.transfer.multipart_chunksize // 2**20} MiB")
            for title, sides, ours in (("keep", up, "store put"), ("fetch", down, "store get")):
                medians = {side: statistics.median(values) for side, values in sides.items()}
                for side, value in medians.items():
                    print(f"  {title:<5} {side:<15} median {value:7.2f} s   "
                          f"{args.gib / value:6.2f} GiB/s")
                for side, value in medians.items():
                    if side != ours:
                        print(f"  {title:<5} {ours} / {side}: {medians[ours] / value:5.2f}x")
            store.close()
        finally:
            server.stop()
            shutil.rmtree(root / "seaweed", ignore_errors=True)


if __name__ == "__main__":
    main()
