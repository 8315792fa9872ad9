"""Stopping examples/web/app.py with signals: status 0, and nothing left in the kernel.

Each test compares exec.bpf.o's links and programs (bpftool, through
``kernelstate``, as test_cli.py does for `aioringbuf exec`) before the
server started, while it ran, and after it exited: what appeared with the
server must be gone. Other programs on the machine are left out of it.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import signal
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from kernelstate import Attached
from prometheus_client.parser import text_string_to_metric_families
from webserver import WebServer, named_program, run_all

TIMEOUT = httpx.Timeout(30)


def queued(client: httpx.Client) -> float:
    """Events waiting in the hub's subscriber queues (the server's /metrics)."""
    text = client.get("/metrics").text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "aioringbuf_hub_queue_length")


@contextlib.contextmanager
def stalled_client(srv: WebServer, directory: pathlib.Path) -> Iterator[httpx.Response]:
    """A client on /events that stops reading, until the server's send to it is stuck.

    Big events fill its small receive window and the server's socket
    buffer; then the server's writer blocks and the client's queue in the
    hub grows. (The server has a huge --queue-size: it is never dropped.)
    """
    name, prog = named_program(directory)
    small = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    with httpx.Client(base_url=srv.url, timeout=TIMEOUT, transport=small) as client, \
            client.stream("GET", "/events", params={"name": f"^{name}$"}) as response, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as probe:
        assert response.status_code == 200
        pad = "x" * 3800
        spawned = 0
        while queued(probe) < 100:
            assert spawned < 10_000, "the server never got stuck writing to the client"
            run_all([[prog, str(spawned + j), pad] for j in range(50)])
            spawned += 50
        yield response


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_open_streams_and_leaves_nothing_attached(
    kernel: None, tmp_path: pathlib.Path, sig: int
) -> None:
    attached = Attached()
    srv = WebServer(tmp_path / "server.log")
    try:
        attached.seen(srv.proc.pid)
        with httpx.stream("GET", f"{srv.url}/events", timeout=TIMEOUT) as r:
            assert r.status_code == 200
            srv.proc.send_signal(sig)
            body = b"".join(r.iter_bytes())  # until the server ends the stream: no error
        log = srv.wait()
    finally:
        srv.kill()
    # The opening message carries the position the stream starts after (resume.py).
    assert re.match(rb"retry: 2000\nid: [0-9a-f]{16}-\d+\n: subscribed\n\n", body), body[:80]
    assert "Application shutdown complete" in log
    attached.assert_gone()


def test_a_stream_stuck_on_a_stalled_client_is_cut_at_shutdown(
    kernel: None, tmp_path: pathlib.Path
) -> None:
    # The stalled stream would hold up the shutdown forever; the grace
    # period (--shutdown-timeout 1) cuts it, and the exit is still clean.
    attached = Attached()
    srv = WebServer(tmp_path / "server.log", "--queue-size", "1000000",
                    "--shutdown-timeout", "1")
    try:
        attached.seen(srv.proc.pid)
        with stalled_client(srv, tmp_path):
            srv.proc.send_signal(signal.SIGINT)
            log = srv.wait(timeout=30)
    finally:
        srv.kill()
    assert "it was not reading at shutdown" in log
    assert "Application shutdown complete" in log
    attached.assert_gone()


def test_second_ctrl_c_during_shutdown_exits_at_once(
    kernel: None, tmp_path: pathlib.Path
) -> None:
    # With a 600 s grace period the first Ctrl-C would wait for the stalled
    # client for ten minutes; the second one must end it now, cleanly.
    attached = Attached()
    srv = WebServer(tmp_path / "server.log", "--queue-size", "1000000",
                    "--shutdown-timeout", "600")
    try:
        attached.seen(srv.proc.pid)
        with stalled_client(srv, tmp_path):
            srv.proc.send_signal(signal.SIGINT)
            srv.wait_log("Waiting for connections to close")
            assert srv.proc.poll() is None  # waiting for the stalled client
            srv.proc.send_signal(signal.SIGINT)
            log = srv.wait(timeout=30)
    finally:
        srv.kill()
    assert "it was not reading at shutdown" in log
    assert "Application shutdown complete" in log
    attached.assert_gone()


def test_ctrl_c_while_clients_connect_and_read(kernel: None, tmp_path: pathlib.Path) -> None:
    # Readers busy receiving events when Ctrl-C comes: each stream ends
    # without error, and the server exits 0.
    attached = Attached()
    srv = WebServer(tmp_path / "server.log")
    name, prog = named_program(tmp_path)
    errors: list[BaseException] = []
    started = threading.Barrier(5)

    def reader() -> None:
        try:
            with httpx.stream("GET", f"{srv.url}/events", params={"name": f"^{name}$"},
                              timeout=TIMEOUT) as r:
                started.wait(timeout=30)
                for _ in r.iter_bytes():
                    pass
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    try:
        attached.seen(srv.proc.pid)
        for t in threads:
            t.start()
        started.wait(timeout=30)
        run_all([[prog, str(i)] for i in range(20)])
        srv.proc.send_signal(signal.SIGINT)
        for t in threads:
            t.join(timeout=60)
        log = srv.wait()
    finally:
        srv.kill()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert "Application shutdown complete" in log
    attached.assert_gone()
