"""The ``provisioning-pipelines`` command line: parser, commands, the demo, the SSE watcher, and
the Dagster webserver and daemon for development."""

from provisioning_pipelines.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
