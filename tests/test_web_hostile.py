"""examples/web/app.py against strangers (issue #12, rows 1, 3, 5, 6, 7, 8, 9).

Real servers (``webserver.WebServer``: the app as a user runs it), real
HTTP clients and connections, real execs, and headless Chromium where
what the browser does is the point. Where the attack is a stall, the
test bounds the time a bystander's request may take with its client's
timeout: on the old code those requests waited for seconds to hours.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import anyio
import anyio.to_thread
import httpx
import pytest
from chromium import Chromium
from privileges import NOBODY
from test_cli_hostile import exec_as
from test_web import TOKEN, exec_events_of, token_file
from webserver import APP, ROOT, WebServer, named_program

pytestmark = pytest.mark.anyio
QUICK = httpx.Timeout(10)  # a bystander's request: seconds, where a stall takes minutes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server is the subject here, not the client's event loop


@pytest.fixture(scope="module")
def server(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    srv = WebServer(tmp_path_factory.mktemp("web") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token_server(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    directory = tmp_path_factory.mktemp("web")
    srv = WebServer(directory / "server.log", "--token-file", token_file(directory))
    yield srv
    srv.stop()


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


# -- row 1: a filter that backtracks ------------------------------------------------------

async def test_hostile_filters_do_not_slow_other_clients(
    server: WebServer, tmp_path: pathlib.Path
) -> None:
    """``?name=(a+)+$`` with an exec of 30 'a' and a '!', and ``(.|.|.|.|.|.|.|.)*X``
    with no hostile exec at all: the other clients and /stats stay quick."""
    name, prog = named_program(tmp_path)
    async with httpx.AsyncClient(base_url=server.url, timeout=QUICK) as client, \
            client.stream("GET", "/events", params={"name": r"(a+)+$"}) as evil1, \
            client.stream("GET", "/events",
                          params={"name": "(.|.|.|.|.|.|.|.)*X"}) as evil2, \
            client.stream("GET", "/events", params={"name": f"^{name}$"}) as bystander:
        assert evil1.status_code == evil2.status_code == bystander.status_code == 200
        await anyio.to_thread.run_sync(exec_as, "a" * 30 + "!")
        await anyio.to_thread.run_sync(exec_as, "b" * 40)  # no X: 8^40 paths for re
        await anyio.to_thread.run_sync(lambda: exec_as(prog, "after", program=prog))
        with anyio.fail_after(10):
            (ev,) = await exec_events_of(bystander, 1)
            stats = (await client.get("/stats")).json()
    assert ev["argv"] == [prog, "after"]
    assert stats["hub"]["subscribers"] >= 3


async def test_a_pattern_re2_refuses_is_a_400(server: WebServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=QUICK) as client:
        for pattern in (r"(a)\1", "(?=x)", "a" * 257):
            r = await client.get("/events", params={"name": pattern})
            assert r.status_code == 400, pattern
            assert r.text.startswith("name: "), r.text


# -- row 3: a cookie that is quadratic to parse -------------------------------------------

async def test_hostile_cookies_do_not_delay_an_authorized_request(
    token_server: WebServer,
) -> None:
    """Unauthenticated requests with quoted backslashes in a cookie: SimpleCookie is
    quadratic on them (CVE-2024-7592; on this Python 0.8 s of CPU for 7,000, 2 s for
    15,000). 12 of each: the old server stalls for half a minute."""
    sizes = [15_000] * 12 + [7_000] * 12  # the first beyond the 8 KiB head limit
    async with httpx.AsyncClient(base_url=token_server.url, timeout=httpx.Timeout(120),
                                 limits=httpx.Limits(max_connections=50)) as evil, \
            httpx.AsyncClient(base_url=token_server.url, timeout=QUICK,
                              headers={"authorization": f"Bearer {TOKEN}"}) as good:
        statuses: dict[int, list[int]] = {15_000: [], 7_000: []}

        async def attack(n: int) -> None:
            r = await evil.get("/stats", headers={"cookie": 'a="' + "\\" * n + '"'})
            statuses[n].append(r.status_code)

        async with anyio.create_task_group() as tg:
            for n in sizes:
                tg.start_soon(attack, n)
            await anyio.sleep(0.5)  # the attack is in the server before we ask
            with anyio.fail_after(5):
                r = await good.get("/stats")
    assert r.status_code == 200
    assert statuses == {15_000: [431] * 12, 7_000: [401] * 12}


def test_cookie_parser_is_linear_and_takes_the_first_of_each_name() -> None:
    from test_web import _load

    parse = _load("security").parse_cookies
    assert parse(b"a=1; b = 2 ;a=3; =x; novalue; c=\"q\"") == {"a": "1", "b": "2", "c": '"q"'}
    assert parse(b'a="' + b"\\" * 8000 + b'"') == {"a": '"' + "\\" * 8000 + '"'}
    assert parse(b"a=" + b"x" * 9000) == {}  # beyond 8 KiB: no credential at all


# -- row 5: cookies ignore ports ------------------------------------------------------------

class CookieRecorder:
    """Another server on another port of 127.0.0.1, keeping the Cookie headers it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cookies: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        head += chunk
                    for line in head.decode("latin-1").split("\r\n"):
                        if line.lower().startswith("cookie:"):
                            self.cookies.append(line.split(":", 1)[1].strip())
                    body = b"<title>other</title>other server"
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (len(body), body))

    def close(self) -> None:
        self.sock.close()


def test_a_page_on_another_port_never_gets_the_token(
    kernel: None, chromium: Chromium, tmp_path: pathlib.Path
) -> None:
    """The browser sends our cookie to every port of 127.0.0.1: it must not hold the
    token, and what it holds must be worth nothing once this server is gone."""
    tokens = token_file(tmp_path)
    srv = WebServer(tmp_path / "server.log", "--token-file", tokens)
    other = CookieRecorder()
    try:
        chromium.page("Page.enable")
        chromium.page("Page.navigate", url=f"{srv.url}/?token={TOKEN}")
        chromium.wait_js("document.documentElement.dataset.state === 'live'")
        chromium.page("Page.navigate", url=f"http://127.0.0.1:{other.port}/")
        chromium.wait_js("document.title === 'other'")
        srv.stop()
        srv = WebServer(tmp_path / "server2.log", "--token-file", tokens, "--port", "0")
        assert other.cookies  # what a page on another port got (the page, a favicon)
        for sent in other.cookies:
            assert TOKEN not in sent
            assert "aioringbuf_session_" in sent
        r = httpx.get(f"{srv.url}/stats", headers={"cookie": sent}, timeout=QUICK)
        assert r.status_code == 401  # a new server: the old session is worth nothing
    finally:
        other.close()
        srv.stop()


# -- row 6: the token on the command line or in the log ------------------------------------

def test_the_token_is_read_from_a_file_and_never_shown(kernel, tmp_path: pathlib.Path) -> None:
    srv = WebServer(tmp_path / "server.log", "--token-file", token_file(tmp_path))
    try:
        cmdline = pathlib.Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline  # what every local user can read
        r = httpx.get(f"{srv.url}/stats", headers={"authorization": f"Bearer {TOKEN}"},
                      timeout=QUICK)
        assert r.status_code == 200
    finally:
        log = srv.stop()
    assert TOKEN not in log
    assert "token required" in log


def test_the_token_from_the_environment(kernel, tmp_path: pathlib.Path) -> None:
    token = "env-" + uuid.uuid4().hex
    os.environ["AIORINGBUF_WEB_TOKEN"] = token
    try:
        srv = WebServer(tmp_path / "server.log")
    finally:
        del os.environ["AIORINGBUF_WEB_TOKEN"]
    try:
        assert httpx.get(f"{srv.url}/stats", timeout=QUICK).status_code == 401
        r = httpx.get(f"{srv.url}/stats", headers={"authorization": f"Bearer {token}"},
                      timeout=QUICK)
        assert r.status_code == 200
    finally:
        log = srv.stop()
    assert token not in log


@pytest.mark.parametrize(("args", "mode", "message"), [
    (["--token", TOKEN], None, "--token would show the token to every local user"),
    (["--token-file", "{dir}/token"], 0o644, "can be read by other users (mode 0644)"),
    (["--token-file", "{dir}/token"], 0o600, "must be at least 16 printable characters"),
    (["--token-file", "{dir}/missing"], None, "cannot read the token file"),
])
def test_unusable_tokens_are_refused(tmp_path: pathlib.Path, args: list[str], mode: int | None,
                                     message: str) -> None:
    if mode is not None:
        path = tmp_path / "token"
        path.write_text("short\n" if mode == 0o600 else TOKEN)
        path.chmod(mode)
    argv = [a.format(dir=tmp_path) for a in args]
    r = subprocess.run([sys.executable, str(APP), *argv], capture_output=True, text=True,
                       env=env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert TOKEN not in r.stderr


# -- row 7: a name that resolves beyond loopback --------------------------------------------

def test_the_bound_address_is_checked_not_the_name(kernel, tmp_path: pathlib.Path) -> None:
    """``--host 127.lan``, which /etc/hosts (in a private mount namespace, for this
    process only) resolves to 0.0.0.0: every interface, so a token is required."""
    hosts = tmp_path / "hosts"
    hosts.write_text("0.0.0.0 127.lan\n127.0.0.1 localhost\n")
    script = f'mount --bind {hosts} /etc/hosts && exec "$@"'
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", sys.executable, str(APP), "--host", "127.lan", "--port", "0"],
                       capture_output=True, text=True, env=env(), timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "web: --host 127.lan listens on 0.0.0.0, which other machines can reach, and every "
        "exec on this machine would be theirs to see: give a token (--token-file FILE or "
        "$AIORINGBUF_WEB_TOKEN)")


# -- row 8: thousands of event streams ------------------------------------------------------

@pytest.mark.timeout(120)
async def test_event_streams_are_capped_per_address_and_in_all(server: WebServer) -> None:
    """Defaults: 32 streams from one address, 128 in all; beyond, 429 and Retry-After.
    The whole of 127.0.0.0/8 is this host, so clients can come from several addresses."""

    def client(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=server.url, timeout=QUICK,
                                 transport=httpx.AsyncHTTPTransport(local_address=address))

    async def refused(c: httpx.AsyncClient, why: str) -> None:
        r = await c.get("/events")
        assert r.status_code == 429, r.text
        assert why in r.text
        assert int(r.headers["retry-after"]) > 0

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(f"127.0.0.{i}")) for i in range(1, 6)]
        for i, c in enumerate(clients[:4]):
            for _ in range(32):
                r = await stack.enter_async_context(c.stream("GET", "/events"))
                assert r.status_code == 200
            if i == 0:
                await refused(c, "32 event streams are open from 127.0.0.1")
        await refused(clients[4], "128 event streams are open")
        with anyio.fail_after(10):
            stats = (await clients[4].get("/stats")).json()
        assert stats["hub"]["subscribers"] == 128
    async with client("127.0.0.1") as c:  # closed streams give their slots back
        with anyio.fail_after(20):
            while (await c.get("/stats")).json()["hub"]["subscribers"]:
                await anyio.sleep(0.05)
        async with c.stream("GET", "/events") as r:
            assert r.status_code == 200


# -- request heads and other connection types -----------------------------------------------

@pytest.mark.parametrize("pieces", [1, 40])
def test_oversized_request_heads_are_refused(server: WebServer, pieces: int) -> None:
    """12 KB of headers, in one write (the app refuses it: 431) or in pieces (h11
    stops buffering at 8 KiB: 400); the server goes on serving."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = (b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 12000
            + b"\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        step = -(-len(head) // pieces)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(head), step):
                sock.sendall(head[i : i + step])
                if pieces > 1:
                    time.sleep(0.01)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431" if pieces == 1 else b"HTTP/1.1 400"), answer[:200]
    assert httpx.get(f"{server.url}/stats", timeout=QUICK).status_code == 200


async def test_token_auth_refuses_websockets_and_unknown_scopes() -> None:
    from test_web import _load

    security = _load("security")
    reached: list[str] = []

    async def app(scope, receive, send) -> None:
        reached.append(scope["type"])

    auth = security.TokenAuth(app, TOKEN)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    await auth({"type": "websocket", "headers": [], "query_string": b""}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}] and reached == []
    good = [(b"authorization", f"Bearer {TOKEN}".encode())]
    await auth({"type": "websocket", "headers": good, "query_string": b""}, receive, send)
    await auth({"type": "lifespan"}, receive, send)
    assert reached == ["websocket", "lifespan"]
    with pytest.raises(RuntimeError, match="unknown type"):
        await auth({"type": "webtransport", "headers": good}, receive, send)


# -- row 9: privileges that fail only when the server starts --------------------------------

def test_missing_tracefs_access_is_exit_77_with_one_line(kernel) -> None:
    """CAP_BPF and CAP_PERFMON pass the privilege check; attaching needs tracefs."""
    caps = "+bpf,+perfmon"
    r = subprocess.run(
        ["setpriv", *NOBODY, f"--inh-caps=-all,{caps}", f"--ambient-caps={caps}",
         f"--bounding-set=-all,{caps}", sys.executable, str(APP), "--port", "0"],
        capture_output=True, text=True, env=env(), cwd="/", timeout=60)
    assert r.returncode == 77, r.stderr
    assert "Traceback" not in r.stderr and "ERROR" not in r.stderr, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if not ln.startswith("INFO:")]
    assert line.startswith("web: reading /sys/kernel/tracing/"), line
    assert "lacks CAP_DAC_READ_SEARCH" in line


# -- row 10, for the web example ------------------------------------------------------------

@pytest.mark.parametrize("size", [1 << 30, 1 << 32])
def test_ring_sizes_beyond_the_kernel_limit_are_refused_before_loading(size: int) -> None:
    r = subprocess.run([sys.executable, str(APP), "--port", "0", "--ring-size", str(size)],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"--ring-size {size} is too large" in r.stderr.splitlines()[-1]
    assert "libbpf" not in r.stderr and "Traceback" not in r.stderr
