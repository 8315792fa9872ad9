"""Real ``nats-server -js`` processes for the tests: one server or a 3-node cluster.

Each server gets free loopback ports and a temporary store directory, and is
identified by its own ``Popen`` (pid) and ports, never by name: other tests
on the machine may run servers of their own. A server can be killed
(SIGKILL), stopped (SIGTERM) and started again on the same ports and store,
which is how the tests fail a broker over or take it away for a while.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server with JetStream; ``url`` is its client URL."""

    def __init__(self, store: str, name: str = "n0", cluster: str | None = None,
                 cluster_port: int | None = None, routes: tuple[int, ...] = ()) -> None:
        self.name = name
        self.port = free_port()
        self.http_port = free_port()
        self.cluster_port = cluster_port
        self.store = os.path.join(store, name)
        self.log = os.path.join(store, f"{name}.log")
        os.makedirs(self.store, exist_ok=True)
        self.conf = os.path.join(store, f"{name}.conf")
        lines = [
            f'server_name: "{name}"',
            'host: "127.0.0.1"',
            f"port: {self.port}",
            f"http_port: {self.http_port}",
            f'jetstream {{ store_dir: "{self.store}", max_memory_store: 64MB, '
            "max_file_store: 1GB }",
        ]
        if cluster is not None:
            route_urls = ", ".join(f'"nats://127.0.0.1:{p}"' for p in routes)
            lines.append(f'cluster {{ name: "{cluster}", host: "127.0.0.1", '
                         f"port: {cluster_port}, routes: [{route_urls}] }}")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> None:
        assert not self.running
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", self.conf], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_listening()

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Until the monitoring port answers /healthz (JetStream up; for a
        cluster node, also caught up with the meta group) and clients connect."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} not healthy after {timeout}s: "
                           f"{last}; {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class NatsCluster:
    """Three JetStream servers routed to each other on loopback."""

    def __init__(self, store: str, size: int = 3, name: str = "aiorbtest") -> None:
        ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(store, f"n{i}", cluster=name, cluster_port=ports[i],
                       routes=tuple(p for j, p in enumerate(ports) if j != i))
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self) -> None:
        for s in self.servers:
            s.start(wait=False)
        for s in self.servers:
            s.wait_listening(timeout=40)

    def stop(self) -> None:
        for s in self.servers:
            s.kill()

    def server(self, name: str) -> NatsServer:
        return next(s for s in self.servers if s.name == name)


@contextlib.contextmanager
def nats_server() -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="aiorb-nats-") as tmp:
        server = NatsServer(tmp)
        try:
            server.start()
            yield server
        finally:
            server.kill()


@contextlib.contextmanager
def nats_cluster() -> Iterator[NatsCluster]:
    with tempfile.TemporaryDirectory(prefix="aiorb-natsc-") as tmp:
        cluster = NatsCluster(tmp)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


# The marks of a test module that starts nats-server: a kernel test, and
# skipped only outside CI when the server is not installed.
NEEDS_NATS = [
    pytest.mark.kernel,
    pytest.mark.skipif(not os.path.exists(NATS_SERVER) and not os.environ.get("CI"),
                       reason="nats-server is not installed (scripts/test.sh installs it)"),
]
