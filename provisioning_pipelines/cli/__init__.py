"""The ``provisioning-pipelines`` command line: commands, the demo, the SSE watcher, dev tools."""

from provisioning_pipelines.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
