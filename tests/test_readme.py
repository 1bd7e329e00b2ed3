"""What the README names exists: make targets, CLI commands, settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLI = str(Path(sys.executable).parent / "provisioning-pipelines")


def test_every_make_target_named_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"`make (\w+)`", README))
    assert targets >= {"demo", "test", "lint", "dev"}  # the README names the front doors
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_every_cli_command_named_answers_help() -> None:
    commands = {tuple(m.split()) for m in re.findall(
        r"provisioning-pipelines ((?:[a-z]+)(?: [a-z]+)?)", README)}
    commands |= {("subscriptions", c) for c in ("create", "list", "show", "retry")}
    assert len(commands) > 8
    for command in sorted(commands):
        words = [w for w in command if w not in {"graph", "repository"}] if command[0] in {
            "provision"} else list(command)
        result = subprocess.run([CLI, *words, "--help"], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (command, result.stderr)


def test_every_setting_in_the_readme_is_in_env_example_and_read() -> None:
    from provisioning_pipelines.settings import Settings

    example = (ROOT / ".env.example").read_text()
    aliases = {f.validation_alias for f in Settings.model_fields.values()}
    read_by_dagster = set(re.findall(r"env: ([A-Z_]+)",
                                     (ROOT / "deploy" / "dagster.yaml").read_text()))
    assert read_by_dagster == {"DAGSTER_PG_URL", "DAGSTER_STORAGE_DIR"}
    table = re.findall(r"^\| `([A-Z_]+)` \|", README, re.M)
    assert len(table) >= 15
    for variable in table:
        assert re.search(rf"^{variable}=", example, re.M), variable
        assert variable in aliases or variable in read_by_dagster, variable
