"""Graph hosts: the machines that hold graph files, behind one interface (``contract``), in
process (``local``) or over HTTP (``client``, of ``provisioning_pipelines.hosts_server``)."""

from provisioning_pipelines.storage.hosts.contract import (
    BackupInfo,
    GraphHost,
    GraphInfo,
    Holding,
    HostHealth,
)
from provisioning_pipelines.storage.hosts.local import LocalHost

__all__ = ["BackupInfo", "GraphHost", "GraphInfo", "Holding", "HostHealth", "LocalHost"]
