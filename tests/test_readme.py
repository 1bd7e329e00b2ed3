"""What the README and the docs say is so: the make targets, CLI commands, settings, files and
modules they name exist, every job's run config is one its job accepts, and the README's first
graph, run as written against a real server, answers what the README shows."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "provisioning_pipelines"
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()
PAGES = {path: path.read_text() for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]}
EVERYTHING = "\n".join(PAGES.values())


def between(text: str, marker: str) -> str:
    """The part of ``text`` between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    found = re.search(rf"<!-- {marker} -->\n(.*?)<!-- /{marker} -->", text, re.S)
    assert found, f"no <!-- {marker} --> section"
    return found.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown table in ``text``, as lists of cells."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


# --- make targets, CLI commands, settings ---------------------------------------------------


def test_every_make_target_named_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    named = r"(?:`|^)(?:[A-Z_]+=\S+ )?make (\w+)"  # in a code span, or a command line
    targets = set(re.findall(named, EVERYTHING, re.M))
    assert {"demo", "test"} <= set(re.findall(named, README, re.M))  # the front doors
    assert targets >= {"demo", "test", "lint", "dev", "validate", "bench"}
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_make_test_is_the_test_command_and_ci_calls_it() -> None:
    assert re.search(r"^make test\s+#", README, re.M)
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def cli_commands_named() -> set[tuple[str, ...]]:
    """Every command the pages name: after ``provisioning-pipelines`` or ``$PP``, and the first
    words of each command in the CLI table of docs/operations.md."""
    commands = {tuple(m.split()) for m in re.findall(
        r"(?:provisioning-pipelines|\$PP) ((?:[a-z]+)(?: [a-z][a-z-]*)?)", EVERYTHING)}
    for row in table_rows(between(PAGES[DOCS / "operations.md"], "cli")):
        for usage in re.findall(r"`([^`]+)`", row[0]):
            commands.add(tuple(re.match(r"[a-z][a-z-]*(?: [a-z][a-z-]*)?", usage).group().split()))
    return {command[:1] if command[0] == "provision" else command for command in commands}


def cli_leaves() -> set[tuple[str, ...]]:
    """Every command the parser has (``graphs list``, ``serve``, ...), aliases left out."""
    from provisioning_pipelines.cli.parser import build_parser

    def subcommands(parser: Any) -> dict[str, Any]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                first_names: dict[int, tuple[str, Any]] = {}
                for name, command in action.choices.items():  # a name, then its aliases
                    first_names.setdefault(id(command), (name, command))
                return dict(first_names.values())
        return {}

    leaves = set()
    for name, command in subcommands(build_parser()).items():
        children = subcommands(command)
        leaves |= {(name, child) for child in children} if children else {(name,)}
    return leaves


def test_every_cli_command_named_answers_help() -> None:
    from provisioning_pipelines.cli.parser import build_parser

    commands = cli_commands_named()
    assert len(commands) > 30
    for command in sorted(commands):
        with contextlib.redirect_stdout(io.StringIO()) as shown, \
                pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*command, "--help"])
        assert exited.value.code == 0, command
        assert "usage: provisioning-pipelines" in shown.getvalue(), command
    console_script = subprocess.run([str(BIN / "provisioning-pipelines"), "--help"],
                                    capture_output=True, text=True, timeout=60)
    assert console_script.returncode == 0, console_script.stderr


def test_the_cli_table_names_every_command() -> None:
    missing = cli_leaves() - cli_commands_named()
    assert not missing, f"docs/operations.md's CLI table lacks {sorted(missing)}"


def settings_table() -> dict[str, str]:
    return {re.fullmatch(r"`([A-Z_]+)`", row[0]).group(1): row[1]
            for row in table_rows(between(PAGES[DOCS / "settings.md"], "settings"))}


def test_the_settings_table_is_every_setting_with_its_default() -> None:
    from provisioning_pipelines.settings import Settings

    fields = {f.validation_alias: f for f in Settings.model_fields.values()}
    table = settings_table()
    production_instance = (ROOT / "deploy" / "dagster.yaml").read_text()
    read_by_the_instance_only = set(re.findall(r"env: ([A-Z_]+)", production_instance))
    assert set(table) == set(fields) | read_by_the_instance_only
    example = (ROOT / ".env.example").read_text()
    for variable, default in table.items():
        assert re.search(rf"^{variable}=", example, re.M), variable
        literal = re.fullmatch(r"`([^`]*)`", default)
        if variable in fields and literal and fields[variable].default is not None:
            expected = fields[variable].default
            if isinstance(expected, bool):
                assert literal.group(1) == str(expected).lower(), variable
            elif isinstance(expected, int | float):
                assert float(literal.group(1)) == expected, variable
            else:
                assert literal.group(1) == str(expected), variable


# --- files, modules, run configs --------------------------------------------------------------

#: Files a page names that a run makes, not the repository.
MADE_AT_RUN_TIME = (".data/", ".quarantine/")
FILE_SUFFIXES = (".md", ".py", ".yaml", ".toml", ".ini", ".lua", ".cypher", ".png", ".example",
                 ".mako", ".css", ".js", ".html")


def paths_named(text: str) -> set[str]:
    """Files and folders a page names: in code spans and links, ending in a known suffix or /."""
    spans = set(re.findall(r"`([^`\s]+)`", text))
    links = {link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", text)}
    return {token for token in spans | links
            if token.endswith((*FILE_SUFFIXES, "/"))
            and not token.startswith(("/", "http", *MADE_AT_RUN_TIME))
            and not re.search(r"[<>*…{}:$=]", token)}


@functools.cache
def file_names_in_the_repository() -> frozenset[str]:
    names = set()
    for _folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in {
            ".git", ".venv", ".data", "__pycache__", "node_modules"}]
        names.update(files)
    return frozenset(names)


def exists(page: Path, token: str) -> bool:
    if "/" not in token:  # a bare file name: somewhere in the repository
        return token in file_names_in_the_repository()
    return any((base / token).exists() for base in (ROOT, PACKAGE, page.parent))


def test_every_file_the_readme_and_docs_name_exists() -> None:
    missing = [f"{page.relative_to(ROOT)}: {token}" for page, text in PAGES.items()
               for token in sorted(paths_named(text)) if not exists(page, token)]
    assert not missing, missing
    for module in re.findall(r"python -m (benchmarks\.\w+)", EVERYTHING):
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
    assert paths_named(README) >= {
        f"docs/{name}.md" for name in ("api", "operations", "lifecycle", "settings", "scaling",
                                       "reliability", "decisions", "architecture")}


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_to_a_section_finds_it() -> None:
    for page, text in PAGES.items():
        for target, anchor in re.findall(r"\]\(([^)\s#]*)#([^)\s]+)\)", text):
            linked = (page.parent / target) if target else page
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}#{anchor}"


def test_the_layout_map_names_every_module_and_only_those() -> None:
    """The map in docs/architecture.md is the package's tree: a module moved or added without
    its line fails here."""
    lines = between(PAGES[DOCS / "architecture.md"], "layout").strip("`\n").splitlines()
    named = {line.split()[0] for line in lines if line.strip() and not line.startswith("```")}
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts}
    packages = {f"{p.parent.relative_to(PACKAGE)}/" for p in PACKAGE.rglob("__init__.py")
                if p.parent != PACKAGE}
    assert not (modules | packages) - named, "not in the map: " + ", ".join(
        sorted((modules | packages) - named))
    assert not named - (modules | packages), "in the map, not in the package: " + ", ".join(
        sorted(named - (modules | packages)))


def test_the_layers_described_are_the_import_contracts() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    architecture = PAGES[DOCS / "architecture.md"]
    for contract in contracts["contracts"]:
        for layer in contract.get("layers", []):
            described = layer.replace("provisioning_pipelines.", "")
            assert re.search(rf"^{re.escape(described)}\s", architecture, re.M), described


def test_every_job_has_a_run_config_its_job_accepts(tmp_path: Path) -> None:
    from dagster import validate_run_config

    from provisioning_pipelines.orchestration import build_definitions
    from provisioning_pipelines.settings import load_settings

    defs = build_definitions(load_settings(DATA_DIR=str(tmp_path)))
    jobs = {job.name for job in defs.get_repository_def().get_all_jobs()
            if not job.name.startswith("__")}
    configs = {}
    for row in table_rows(between(PAGES[DOCS / "operations.md"], "run-configs")):
        job = re.fullmatch(r"`(\w+)`", row[0]).group(1)
        configs[job] = yaml.safe_load(re.search(r"`([^`]+)`", row[-1]).group(1))
    assert set(configs) == jobs
    for job, config in configs.items():
        validate_run_config(defs.resolve_job_def(job), config)


# --- the README's first graph, as written -------------------------------------------------------


def first_graph() -> tuple[str, list[tuple[str, list[Any]]]]:
    """The server's command, and the steps (commands, the answers shown after them)."""
    server, script = re.findall(r"```sh\n(.*?)```", between(README, "first-graph"), re.S)
    [server_command] = [line for line in server.splitlines() if not line.startswith("#")]
    steps = []
    for paragraph in re.split(r"\n\s*\n", script.strip()):
        shown = [json.loads(line[3:]) for line in paragraph.splitlines()
                 if line.startswith("#> ")]
        steps.append((paragraph, shown))
    return server_command, steps


def as_run_here(text: str, port: int) -> str:
    """The README's commands with this test's port and this interpreter's bin folder."""
    return re.sub(r"\b8000\b", str(port), text.replace(".venv/bin/", f"{BIN}/"))


def answers_in(output: str) -> list[Any]:
    """Every JSON object printed at the start of a line, in order."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while (start := output.find("{", position)) != -1:
        if start and output[start - 1] != "\n":
            position = start + 1
            continue
        try:
            value, position = decoder.raw_decode(output, start)
            found.append(value)
        except ValueError:
            position = start + 1
    return found


def agrees(shown: Any, answered: Any) -> bool:
    """What the README shows is in the answer: its keys and values (``…`` ends a prefix)."""
    if isinstance(shown, dict):
        return isinstance(answered, dict) and all(
            key in answered and agrees(value, answered[key]) for key, value in shown.items())
    if isinstance(shown, list):
        return isinstance(answered, list) and len(shown) == len(answered) and all(
            map(agrees, shown, answered))
    if isinstance(shown, str) and shown.endswith("…"):
        return isinstance(answered, str) and answered.startswith(shown[:-1])
    return shown == answered and type(shown) is type(answered)


@contextlib.contextmanager
def server(command: list[str], cwd: Path, env: dict[str, str], url: str) -> Iterator[Path]:
    log = cwd / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        yield log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_first_graph_runs_as_written_and_answers_what_the_readme_shows(
        tmp_path: Path) -> None:
    server_command, steps = first_graph()
    assert sum(len(shown) for _, shown in steps) >= 5
    port = free_port()
    # The embedded default, in a folder of its own: nothing set but where to find programs.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    script = "\n".join(f"{as_run_here(commands, port)}\nprintf '\\n@@step {n}@@\\n'"
                       for n, (commands, _shown) in enumerate(steps))
    with server(shlex.split(as_run_here(server_command, port)), tmp_path, env,
                f"http://127.0.0.1:{port}") as log:
        ran = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=240)
        assert ran.returncode == 0, ran.stdout + log.read_text(errors="replace")
        assert "POST /v1/subscriptions" in log.read_text(errors="replace")  # this server's
    assert list((tmp_path / ".data" / "graphs").rglob("kg*.lbug"))  # the graph, on the default
    outputs = re.split(r"\n@@step \d+@@\n", ran.stdout)
    for (commands, shown), output in zip(steps, outputs, strict=False):
        answered = answers_in(output)
        assert len(answered) >= len(shown), (commands, output)
        for expected, answer in zip(shown, answered[-len(shown):] if shown else [],
                                    strict=True):
            assert agrees(expected, answer), (commands, expected, answer)
