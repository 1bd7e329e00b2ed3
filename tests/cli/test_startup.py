"""What the command line imports before it does anything: ``--help`` nothing outside the standard
library, ``operations watch`` (HTTP to the API only) httpx and rich, neither Dagster, SQLAlchemy
nor the settings. Each check runs in a fresh interpreter, since this one has imported them all."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.serving import http_server

HEAVY = {"dagster", "sqlalchemy", "alembic", "ladybug", "redis", "starlette", "uvicorn",
         "pydantic", "pydantic_settings", "stripe"}

LOADED = """
import json, sys
from provisioning_pipelines.cli.parser import main
try:
    status = main({argv!r})
except SystemExit as exit_:
    status = exit_.code
print(json.dumps({{"status": status, "modules": sorted(sys.modules)}}))
"""


def loaded_by(argv: list[str], cwd: Path) -> tuple[object, set[str]]:
    """The exit status of ``provisioning-pipelines ARGV`` and every module it imported."""
    ran = subprocess.run([sys.executable, "-c", LOADED.format(argv=argv)], cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    return answer["status"], set(answer["modules"])


def third_party(modules: set[str]) -> set[str]:
    tops = {name.split(".")[0] for name in modules}
    return {top for top in tops if top not in sys.stdlib_module_names and not top.startswith("_")
            and top != "provisioning_pipelines"}


class CompletedOperation(BaseHTTPRequestHandler):
    """The API's event stream of an operation that completed."""

    def do_GET(self) -> None:
        events = [("1-0", "operation_started", {"status": "running", "progress": 0}),
                  ("2-0", "operation_completed", {"status": "completed", "progress": 100,
                                                  "result": {"graph_id": "kg0123456789abcdef"}})]
        body = "".join(f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
                       for i, kind, data in events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    with http_server(CompletedOperation) as url:
        yield url


def test_help_imports_nothing_outside_the_standard_library(tmp_path: Path) -> None:
    status, modules = loaded_by(["--help"], tmp_path)
    assert status == 0
    assert third_party(modules) == set()
    assert "provisioning_pipelines.settings" not in modules


def test_a_subcommands_help_imports_nothing_outside_the_standard_library(
        tmp_path: Path) -> None:
    status, modules = loaded_by(["graphs", "restore-backup", "--help"], tmp_path)
    assert status == 0
    assert third_party(modules) == set()


def test_watching_an_operation_imports_only_the_http_client_and_the_progress_bar(
        tmp_path: Path, api_url: str) -> None:
    status, modules = loaded_by(["operations", "watch", "op_1", "--api-key", "ppk_x",
                                 "--url", api_url], tmp_path)
    assert status == 0
    assert third_party(modules) & HEAVY == set()
    assert {"httpx", "rich"} <= third_party(modules)
    assert "provisioning_pipelines.settings" not in modules


def test_an_unreachable_api_is_explained_without_importing_the_database(
        tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), CompletedOperation) as closed:
        dead = f"http://127.0.0.1:{closed.server_address[1]}"
    status, modules = loaded_by(["operations", "watch", "op_1", "--api-key", "ppk_x",
                                 "--url", dead], tmp_path)
    assert status == 2
    assert third_party(modules) & HEAVY == set()
