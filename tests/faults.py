"""Faults injected at the lowest write a test can reach, for tests of several packages."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from provisioning_pipelines.runtime.resources import GraphEngineResource
from provisioning_pipelines.storage.ladybug import LadybugEngine


class FullDiskEngine(LadybugEngine):
    """The disk is full for the next ``fills`` writes of a new graph's bytes."""

    fills = 0

    def _copy(self, template: Path, temp: Path) -> None:
        if FullDiskEngine.fills > 0:
            FullDiskEngine.fills -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temp))
        super()._copy(template, temp)


class FullDiskEngineResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return FullDiskEngine(template_dir=Path(self.data_dir) / ".templates")
