"""`aioringbuf exporter` against whoever can reach its port (issue #12, row 4 and more).

The exporter runs as a user runs it (a process, real sockets); the
attacker opens real TCP connections and leaves them idle.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from test_metrics import start_exporter, wait_serving
from test_web import TOKEN, token_file

MAX_CONNECTIONS = 64  # aioringbuf._exporter.MAX_CONNECTIONS


@contextlib.contextmanager
def exporter(*args: str, nofile: int | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    preexec = None
    if nofile is not None:
        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    proc = start_exporter(*args, preexec_fn=preexec)
    try:
        yield proc, wait_serving(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def idle_connections(base: str, n: int) -> list[socket.socket]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect((host, int(port)))  # the kernel completes it from the backlog
        socks.append(s)
    return socks


def scrape_eventually(base: str, timeout: float = 30, **kw) -> httpx.Response:
    """The first answer that is not a refusal, retrying while the exporter recovers."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            r = httpx.get(f"{base}/metrics", timeout=5, **kw)
            if r.status_code != 503:
                return r
        assert time.monotonic() < deadline, "the exporter never answered again"
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err.decode()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_running_out_of_file_descriptors_pauses_accepting(kernel, backend: str) -> None:
    """Row 4: idle connections past ``ulimit -n``. accept() fails with EMFILE: the
    exporter pauses, keeps running, and serves again once the connections close."""
    with exporter("--backend", backend, nofile=256) as (proc, base):
        used = open_fds(proc.pid)
        assert used < 256 - MAX_CONNECTIONS, used  # room for the cap; so lower the limit:
    nofile = used + 24  # fewer free descriptors than MAX_CONNECTIONS: EMFILE comes first
    with exporter("--backend", backend, nofile=nofile) as (proc, base):
        socks = idle_connections(base, 200)
        try:
            deadline = time.monotonic() + 20
            while open_fds(proc.pid) < nofile:  # until every descriptor is taken
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, open_fds(proc.pid)
                time.sleep(0.05)
            time.sleep(0.5)  # accept() keeps failing meanwhile
            assert proc.poll() is None, proc.communicate()[1]
        finally:
            for s in socks:
                s.close()
        r = scrape_eventually(base)
        assert r.status_code == 200 and "aioringbuf_events_delivered_total" in r.text
        err = stop(proc)
    assert "Traceback" not in err
    assert "cannot accept connections (Too many open files); pausing until some close" in err


def test_connections_beyond_the_cap_are_refused_at_once(kernel) -> None:
    with exporter() as (proc, base):
        socks = idle_connections(base, MAX_CONNECTIONS)
        try:
            time.sleep(0.5)  # every one accepted and waiting for its request
            r = httpx.get(f"{base}/metrics", timeout=5)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
        finally:
            for s in socks:
                s.close()
        assert scrape_eventually(base).status_code == 200
        stop(proc)


def test_beyond_loopback_the_exporter_needs_a_token(kernel) -> None:
    proc = start_exporter("--host", "0.0.0.0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert err.decode().strip() == (
        "aioringbuf exporter: --host 0.0.0.0 listens on 0.0.0.0, which other machines can "
        "reach, and every exec on this machine would be theirs to see: give a token "
        "(--token-file FILE or $AIORINGBUF_EXPORTER_TOKEN)")


def test_with_a_token_every_request_must_carry_it(kernel, tmp_path) -> None:
    with exporter("--host", "0.0.0.0", "--token-file", token_file(tmp_path)) as (proc, base):
        base = base.replace("0.0.0.0", "127.0.0.1")
        assert TOKEN.encode() not in open(f"/proc/{proc.pid}/cmdline", "rb").read()
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
        wrong = {"authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert httpx.get(f"{base}/metrics", headers=wrong, timeout=10).status_code == 401
        good = {"authorization": f"Bearer {TOKEN}"}
        r = httpx.get(f"{base}/metrics", headers=good, timeout=10)
        assert r.status_code == 200 and "aioringbuf_events_delivered_total" in r.text
        err = stop(proc)
    assert TOKEN not in err


@pytest.mark.parametrize("size", [1 << 30, 1 << 32])
def test_ring_sizes_beyond_the_kernel_limit_are_one_line(size: int) -> None:
    proc = start_exporter("--ring-size", str(size))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    (line,) = err.decode().strip().splitlines()
    assert line.startswith(f"aioringbuf exporter: --ring-size {size} is too large")
