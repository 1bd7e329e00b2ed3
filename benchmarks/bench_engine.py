"""Create graph databases by running the DDL and by copying a template, side by side.

Why: DESIGN.md predicts that opening a database and running the schema DDL costs tens of
milliseconds while copying a file that already holds the schema costs about one. This measures
both through the real ``LadybugEngine.create_database`` on the same disk, interleaved so drift
(page cache, CPU frequency) hits both alike, and checks every file it made.

    .venv/bin/python -m benchmarks.bench_engine [-n 30] [--dir PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from provisioning_pipelines.services.graphs.schemas import schema_ddl
from provisioning_pipelines.storage.ladybug import LadybugEngine, expected_tables

EXTENSIONS = ["accounting", "crm", "supply_chain"]


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def run(n: int, root: Path) -> None:
    ddl = schema_ddl(EXTENSIONS)
    data = root / "data"
    direct = LadybugEngine(use_templates=False)
    templated = LadybugEngine(template_dir=root / "templates")

    # The first templated create builds and verifies the template: a one-off per schema.
    first = _timed(lambda: templated.create_database(data / "warmup_template.lbug", ddl))
    warm_direct = _timed(lambda: direct.create_database(data / "warmup_direct.lbug", ddl))

    samples: dict[str, list[float]] = {"run DDL": [], "copy template": []}
    for i in range(n):  # interleaved: both methods see the same machine state
        samples["run DDL"].append(
            _timed(lambda i=i: direct.create_database(data / f"ddl_{i}.lbug", ddl))
        )
        samples["copy template"].append(
            _timed(lambda i=i: templated.create_database(data / f"tpl_{i}.lbug", ddl))
        )

    expected = expected_tables(ddl)
    made = sorted(data.glob("*.lbug"))
    bad = [p.name for p in made if direct.list_tables(p) != expected]
    assert not bad, f"invalid databases: {bad}"

    print(
        f"create_database, base + {', '.join(EXTENSIONS)}: {len(ddl)} statements, "
        f"{len(expected)} tables, n={n} each, files in {root}"
    )
    print(f"{'method':<15}{'median ms':>11}{'p95 ms':>10}{'min ms':>10}{'max ms':>10}")
    for name, values in samples.items():
        print(
            f"{name:<15}{statistics.median(values):>11.2f}{_p95(values):>10.2f}"
            f"{min(values):>10.2f}{max(values):>10.2f}"
        )
    ddl_med = statistics.median(samples["run DDL"])
    tpl_med = statistics.median(samples["copy template"])
    print(
        f"ratio (DDL / template): median {ddl_med / tpl_med:.1f}x, "
        f"p95 {_p95(samples['run DDL']) / _p95(samples['copy template']):.1f}x"
    )
    print(
        f"one-off: first templated create (builds + verifies the template) {first:.1f} ms; "
        f"first direct create {warm_direct:.1f} ms"
    )
    print(f"all {len(made)} files verified (tables match the DDL)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="databases per method (default 30)")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temp folder, removed)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.n, Path(tempfile.mkdtemp(prefix="bench-engine-", dir=args.dir)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as root:
        run(args.n, Path(root))


if __name__ == "__main__":
    main()
