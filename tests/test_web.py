"""examples/web/app.py for real: uvicorn in a process, httpx clients, headless Chromium.

The server runs as a user runs it (``python examples/web/app.py --port 0``,
see ``webserver.py``) and says when its exec probes are attached; the tests
then exec programs with distinctive names and look for them in what the
clients receive. The server's own view comes from ``/metrics`` and
``/stats``. Stopping it with signals: ``test_web_signals.py``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from chromium import Chromium
from prometheus_client.parser import text_string_to_metric_families
from webserver import APP, ROOT, WebServer, named_program, run_all

import aioringbuf
import aioringbuf.exec

TOKEN = "t0ken-" + uuid.uuid4().hex
TIMEOUT = httpx.Timeout(30)


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"web_{name}", APP.parent / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- servers ---------------------------------------------------------------------------

SERVER_RING = 32 << 20  # the ring of the module's server (see server())


@pytest.fixture(scope="module")
def server(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """Open to loopback, a smaller per-client queue (2048) so slow clients show sooner.

    Not much smaller: the queue holds events before the client's filter,
    and on a busy machine one drained batch (up to 1024 execs of anyone's)
    must not overflow a client that reads.

    A 32 MiB ring instead of the default 8: the stalled-client test pushes
    about 11 MB of 3.8 KB execs through it, and on the pure-Python path a
    busy machine once let the server fall 8 MiB behind (one kernel drop).
    The tests are about the hub and its clients, and each asserts zero
    kernel drops, so the ring is sized for the burst they make.
    """
    srv = WebServer(tmp_path_factory.mktemp("web") / "server.log", "--queue-size", "2048",
                    "--ring-size", str(SERVER_RING))
    yield srv
    srv.stop()


def token_file(directory: pathlib.Path, token: str = TOKEN) -> str:
    """A file holding ``token`` that only its owner can read, as --token-file wants."""
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def token_server(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """With a token file, an extra --redact pattern, and plain asyncio instead of uvloop."""
    directory = tmp_path_factory.mktemp("web")
    srv = WebServer(directory / "server.log", "--token-file", token_file(directory),
                    "--redact", r"sk-[A-Za-z0-9]+", "--loop", "asyncio")
    yield srv
    srv.stop()


# -- clients ------------------------------------------------------------------------------

async def sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def exec_events_of(response: httpx.Response, n: int) -> list[dict]:
    got = []
    async for event, data in sse_messages(response):
        if event == "exec":
            got.append(json.loads(data))
            if len(got) == n:
                break
    return got


async def _until_first_exec(
    messages: AsyncIterator[tuple[str, str]],
) -> AsyncIterator[tuple[str, str]]:
    async for event, data in messages:
        if event == "exec":
            yield event, data
            return


async def scrape(client: httpx.AsyncClient, **kw: Any) -> dict[str, float]:
    r = await client.get("/metrics", **kw)
    r.raise_for_status()
    return {s.name: s.value for f in text_string_to_metric_families(r.text) for s in f.samples
            if s.labels.get("stream") == "exec"}


async def wait_metric(client: httpx.AsyncClient, name: str, want: float,
                      timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while (await scrape(client))[name] != want:
            await anyio.sleep(0.02)


# -- the tests ---------------------------------------------------------------------------

class TestClients:
    pytestmark = pytest.mark.anyio

    async def test_twenty_clients_get_every_exec_in_order(
        self, server: WebServer, tmp_path: pathlib.Path
    ) -> None:
        name, prog = named_program(tmp_path)
        n = 20
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT,
                                     limits=httpx.Limits(max_connections=30)) as client, \
                contextlib.AsyncExitStack() as stack:
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            responses = [await stack.enter_async_context(
                client.stream("GET", "/events", params={"name": f"^{name}$"}))
                for _ in range(20)]
            assert all(r.status_code == 200 for r in responses)
            # Headers come after the subscription: all 20 are listening now.
            assert (await scrape(client))["aioringbuf_hub_subscribers"] == 20
            results: list[list[str]] = [[] for _ in responses]
            async with anyio.create_task_group() as tg:
                async def read(i: int) -> None:
                    results[i] = [ev["argv"][1] for ev in await exec_events_of(responses[i], n)]

                for i in range(len(responses)):
                    tg.start_soon(read, i)
                await anyio.to_thread.run_sync(run_all, [[prog, str(i)] for i in range(n)])
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            metrics = await scrape(client)
        assert results == [[str(i) for i in range(n)]] * 20
        assert metrics["aioringbuf_events_kernel_dropped_total"] == 0
        print(f"20 clients x {n} events, in order; subscribers after: "
              f"{metrics['aioringbuf_hub_subscribers']:.0f}")

    async def test_clients_leaving_mid_stream_leave_nothing_behind(
        self, server: WebServer, tmp_path: pathlib.Path
    ) -> None:
        name, prog = named_program(tmp_path)
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            before = await scrape(client)
            async with anyio.create_task_group() as tg:
                ready = anyio.Event()
                subscribed = 0

                async def leave_after(k: int) -> None:
                    nonlocal subscribed
                    async with client.stream("GET", "/events",
                                             params={"name": f"^{name}$"}) as r:
                        subscribed += 1
                        if subscribed == 10:
                            ready.set()
                        got = await exec_events_of(r, k)
                        assert [ev["argv"][1] for ev in got] == [str(i) for i in range(k)]
                    # leaving the block closes the connection, events still coming

                for k in range(1, 11):
                    tg.start_soon(leave_after, k)
                await ready.wait()
                await anyio.to_thread.run_sync(run_all, [[prog, str(i)] for i in range(30)])
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            after = await scrape(client)
        assert after["aioringbuf_hub_subscriptions_total"] == \
            before["aioringbuf_hub_subscriptions_total"] + 10
        assert after["aioringbuf_hub_disconnects_total"] == \
            before["aioringbuf_hub_disconnects_total"]
        assert after["aioringbuf_hub_queue_length"] == 0

    @pytest.mark.timeout(240)
    async def test_a_stalled_client_is_dropped_and_the_others_keep_up(
        self, server: WebServer, tmp_path: pathlib.Path
    ) -> None:
        # Big events (3.8 KB of argv each) fill the stalled client's TCP
        # buffers, then its 2048-event queue in the hub; it is disconnected.
        # Every wait is bounded and says what it waited for: on a machine
        # busy with others' execs this takes longer, never forever.
        name, prog = named_program(tmp_path)
        pad = "x" * 3800
        params = {"name": f"^{name}$"}
        # A small receive buffer: the stalled client stops taking bytes early.
        small = httpx.AsyncHTTPTransport(
            socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client, \
                httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, transport=small) as slow:
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            before = await scrape(client)
            async with slow.stream("GET", "/events", params=params) as stalled, \
                    contextlib.AsyncExitStack() as stack:
                readers = [await stack.enter_async_context(
                    client.stream("GET", "/events", params=params)) for _ in range(3)]
                seen: list[list[int]] = [[] for _ in readers]

                async def read(i: int) -> None:
                    async for event, data in sse_messages(readers[i]):
                        assert event == "exec", (event, data)  # never dropped or missed
                        arg = json.loads(data)["argv"][1]
                        if arg == "end":
                            return
                        seen[i].append(int(arg))
                    pytest.fail(f"reader {i}'s stream ended before 'end' "
                                f"(it got {len(seen[i])} events)")

                spawned = 0
                try:
                    with anyio.fail_after(200):  # spawning until the drop, then "end"
                        async with anyio.create_task_group() as tg:
                            for i in range(len(readers)):
                                tg.start_soon(read, i)
                            while (await scrape(client))["aioringbuf_hub_disconnects_total"] \
                                    == before["aioringbuf_hub_disconnects_total"]:
                                assert spawned < 20_000, "the stalled client was never dropped"
                                batch = [[prog, str(spawned + j), pad] for j in range(50)]
                                await anyio.to_thread.run_sync(run_all, batch)
                                spawned += 50
                            during = await scrape(client)
                            await anyio.to_thread.run_sync(run_all, [[prog, "end"]])
                except TimeoutError:
                    got_so_far = [len(x) for x in seen]
                    pytest.fail(f"after {spawned} execs the stalled client was not dropped, or "
                                f"a reader missed 'end': readers got {got_so_far}")
                # The stalled client reads at last: a prefix, then the server's close.
                # (A wider window first: 4 MB through 4 KB windows would take a minute.)
                sock = stalled.extensions["network_stream"].get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                got: list[int] = []
                with pytest.raises(httpx.RemoteProtocolError):
                    async for _, data in sse_messages(stalled):
                        got.append(int(json.loads(data)["argv"][1]))
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            after = await scrape(client)
        assert seen == [list(range(spawned))] * 3
        assert got == list(range(len(got))) and len(got) < spawned
        assert during["aioringbuf_hub_subscribers"] == 3
        assert after["aioringbuf_hub_disconnects_total"] == \
            before["aioringbuf_hub_disconnects_total"] + 1
        assert after["aioringbuf_events_kernel_dropped_total"] == 0
        assert after["aioringbuf_events_queue_dropped_total"] == 0
        dropped = (after["aioringbuf_hub_events_dropped_total"]
                   - before["aioringbuf_hub_events_dropped_total"])
        print(f"stalled client: disconnected after {spawned} execs ({len(got)} reached it, "
              f"{dropped:.0f} dropped in the hub); 3 readers got {spawned} each; kernel drops "
              f"{after['aioringbuf_events_kernel_dropped_total']:.0f}; "
              f"subscribers after: {after['aioringbuf_hub_subscribers']:.0f}")

    async def test_metrics_parse_and_agree_with_stats(
        self, server: WebServer, tmp_path: pathlib.Path
    ) -> None:
        # Some traffic first, so that the counters are not all zero.
        name, prog = named_program(tmp_path)
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            async with client.stream("GET", "/events", params={"name": f"^{name}$"}) as r:
                await anyio.to_thread.run_sync(run_all, [[prog, str(i)] for i in range(5)])
                assert len(await exec_events_of(r, 5)) == 5
            await wait_metric(client, "aioringbuf_hub_subscribers", 0)
            # A scrape between two identical /stats answers saw those very numbers
            # (execs elsewhere on the machine can move them: try again then).
            for _ in range(50):
                first = (await client.get("/stats")).json()
                r = await client.get("/metrics")
                last = (await client.get("/stats")).json()
                if first == last:
                    break
            else:
                pytest.fail("the exec counters never held still for three requests")
        assert r.headers["content-type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        m = {s.name: s.value for f in families.values() for s in f.samples
             if s.labels.get("stream") == "exec"}
        st, hub = first["exec"], first["hub"]
        expected = {
            "aioringbuf_events_delivered_total": st["delivered"],
            "aioringbuf_events_kernel_dropped_total": st["kernel_drops"],
            "aioringbuf_events_queue_dropped_total": st["queue_drops"],
            "aioringbuf_decode_errors_total": st["decode_errors"],
            "aioringbuf_events_discarded_total": st["discarded"],
            "aioringbuf_ring_fill_ratio": st["avail_bytes"] / st["ring_size"],
            "aioringbuf_ring_size_bytes": st["ring_size"],
            "aioringbuf_queue_length": st["queue_len"],
            "aioringbuf_queue_peak": st["queue_peak"],
            "aioringbuf_hub_subscribers": hub["subscribers"],
            "aioringbuf_hub_queue_length": hub["queued"],
            "aioringbuf_hub_subscriptions_total": hub["subscriptions"],
            "aioringbuf_hub_disconnects_total": hub["disconnects"],
            "aioringbuf_hub_events_delivered_total": hub["delivered"],
            "aioringbuf_hub_events_dropped_total": hub["dropped"],
            "aioringbuf_hub_events_unobserved_total": hub["unobserved"],
        }
        assert m == expected
        assert st["delivered"] >= 5 and hub["delivered"] >= 5 and st["kernel_drops"] == 0
        assert st["ring_size"] == SERVER_RING  # as the server was started
        assert families["aioringbuf_events_delivered"].type == "counter"
        assert families["aioringbuf_hub_subscribers"].type == "gauge"
        print(f"/metrics == /stats: delivered={st['delivered']} kernel_drops="
              f"{st['kernel_drops']} queue_drops={st['queue_drops']} decode_errors="
              f"{st['decode_errors']} fill={expected['aioringbuf_ring_fill_ratio']} "
              f"subscribers={hub['subscribers']} hub delivered={hub['delivered']}")

    async def test_bad_requests_are_refused(self, server: WebServer) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            for params in ({"pid": "x"}, {"name": "("}, {"policy": "block"}):
                r = await client.get("/events", params=params)
                assert r.status_code == 400, params
            assert (await client.post("/events")).status_code == 405
            r = await client.get("/stats", headers={"host": "attacker.example"})
            assert r.status_code == 400  # DNS rebinding
            r = await client.get("/")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["referrer-policy"] == "no-referrer"

    async def test_every_route_needs_the_token(self, token_server: WebServer) -> None:
        routes = ["/", "/events", "/metrics", "/stats", "/static/app.js", "/static/style.css",
                  "/nope"]
        bearer = {"authorization": f"Bearer {TOKEN}"}
        port = token_server.url.rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=token_server.url, timeout=TIMEOUT) as client:
            for route in routes:
                for headers in ({}, {"authorization": "Bearer nope"},
                                {"cookie": f"aioringbuf_token_{port}={TOKEN}"}):
                    r = await client.get(route, headers=headers, params={"token": "x"})
                    assert r.status_code == 401, (route, headers)
                    assert r.headers["www-authenticate"].startswith("Bearer")
                async with client.stream("GET", route, headers=bearer) as r:
                    assert r.status_code == (404 if route == "/nope" else 200), route
            r = await client.get("/", params={"token": TOKEN})
            assert r.status_code == 200
            cookie = r.headers["set-cookie"]
            name, _, value = cookie.split(";", 1)[0].partition("=")
            assert name.startswith("aioringbuf_session_") and TOKEN not in cookie
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            fresh = httpx.AsyncClient(base_url=token_server.url, timeout=TIMEOUT,
                                      cookies={name: value})
            async with fresh:
                assert (await fresh.get("/stats")).status_code == 200
            wrong = httpx.AsyncClient(base_url=token_server.url, timeout=TIMEOUT,
                                      cookies={name: value[:-1] + "x"})
            async with wrong:
                assert (await wrong.get("/stats")).status_code == 401

    async def test_secrets_in_argv_are_masked(
        self, token_server: WebServer, tmp_path: pathlib.Path
    ) -> None:
        name, prog = named_program(tmp_path)
        argv = [prog, "--password", "hunter2", "token=abc123", "https://bob:pw9@example.org/x",
                "Authorization: Bearer eyJsecret", "--api-key=k3y", "sk-live0123", "plain"]
        async with httpx.AsyncClient(base_url=token_server.url, timeout=TIMEOUT,
                                     headers={"authorization": f"Bearer {TOKEN}"}) as client:
            async with client.stream("GET", "/events", params={"name": f"^{name}$"}) as r:
                await anyio.to_thread.run_sync(run_all, [argv])
                (ev,) = await exec_events_of(r, 1)
        assert ev["argv"][1:] == ["--password", "***", "token=***", "https://bob:***@example.org/x",
                                  "Authorization: Bearer ***", "--api-key=***", "***", "plain"]
        assert ev["comm"] == name and ev["filename"] == prog

    async def test_sse_data_is_the_cli_json_form(
        self, token_server: WebServer, tmp_path: pathlib.Path
    ) -> None:
        """The page gets msgspec.json.encode(ExecEvent), as `aioringbuf exec --json`
        prints it: every field, and bytes that are not UTF-8 kept apart from a
        typed backslash."""
        name, prog = named_program(tmp_path)
        async with httpx.AsyncClient(base_url=token_server.url, timeout=TIMEOUT,
                                     headers={"authorization": f"Bearer {TOKEN}"}) as client:
            async with client.stream("GET", "/events", params={"name": f"^{name}$"}) as r:
                await anyio.to_thread.run_sync(
                    run_all, [[prog, os.fsdecode(b"bad-\xff"), "typed-\\xff"]])
                (data,) = [d async for _, d in _until_first_exec(sse_messages(r))]
        ev = msgspec.json.decode(data, type=aioringbuf.ExecEvent)
        assert [aioringbuf.exec.kernel_bytes(a) for a in ev.argv] == \
            [prog.encode(), b"bad-\xff", b"typed-\\xff"]
        assert ev.comm == name and ev.ret == 0
        fields = msgspec.json.schema(aioringbuf.ExecEvent)["$defs"]["ExecEvent"]["properties"]
        assert set(json.loads(data)) == set(fields)
        assert abs(ev.realtime_ns - time.time_ns()) < 60e9


@pytest.mark.parametrize(("argv", "masked"), [
    (["mysql", "--password", "s3cret", "db"], ["mysql", "--password", "***", "db"]),
    (["x", "--client-secret=abc", "-token", "t"], ["x", "--client-secret=***", "-token", "***"]),
    (["env", "PGPASSWORD=pw", "AWS_ACCESS_KEY=AKIA1"], ["env", "PGPASSWORD=***",
                                                         "AWS_ACCESS_KEY=***"]),
    (["curl", "https://h/api?a=1&api_key=zz&b=2"], ["curl", "https://h/api?a=1&api_key=***&b=2"]),
    (["git", "clone", "https://u:tok@github.com/r"], ["git", "clone", "https://u:***@github.com/r"]),
    (["curl", "-H", "X-Api-Key: abc"], ["curl", "-H", "X-Api-Key: ***"]),
    (["ls", "-la", "/tmp/keys"], ["ls", "-la", "/tmp/keys"]),
    (["ssh", "--password"], ["ssh", "--password"]),
])
def test_default_redaction(argv: list[str], masked: list[str]) -> None:
    assert _load("redact").Redactor()(argv) == masked


def test_custom_redaction_patterns() -> None:
    redact = _load("redact")
    custom = redact.Redactor([re.compile(r"sk-\w+"), re.compile(r"pin (\d+)")], defaults=False)
    assert custom(["a", "sk-123", "pin 4711", "--password", "x"]) == \
        ["a", "***", "pin ***", "--password", "x"]


# -- a real browser ----------------------------------------------------------------------

def test_the_page_shows_a_new_process_live(
    token_server: WebServer, chromium: Chromium, tmp_path: pathlib.Path
) -> None:
    # The token arrives as ?token= once; the page keeps going on the cookie.
    chromium.page("Page.enable")
    chromium.page("Page.navigate", url=f"{token_server.url}/?token={TOKEN}")
    chromium.wait_js("document.documentElement.dataset.state === 'live'")
    assert "token" not in chromium.js("location.href")  # taken out of the address bar
    chromium.wait_js("document.getElementById('subscribers').textContent === '1'")
    name, prog = named_program(tmp_path, prefix="webdemo")
    run_all([["/bin/sh", "-c", "ls / >/dev/null; uname -r >/dev/null"],
             ["/bin/sh", "-c", "/nonexistent/tool --flag 2>/dev/null; true"],
             [prog, "--user", "alice", "--password", "hunter2", "deploy",
              os.fsdecode(b"bad-\xff")]])
    row = chromium.wait_js(
        f"[...document.querySelectorAll('#rows tr')].map(tr => tr.innerText)"
        f".find(t => t.includes('{name}'))")
    assert "hunter2" not in row and "--password ***" in row
    assert "deploy bad-\\xff" in row  # the byte 0xff, shown as the CLI shows it
    clock = chromium.js("document.querySelector('#rows tr td').textContent")
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", clock), clock
    assert chromium.js("document.querySelectorAll('#rows tr.failed').length") >= 1  # ENOENT
    height = chromium.js("Math.ceil(document.body.getBoundingClientRect().bottom) + 16")
    clip = {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}
    shot = base64.b64decode(chromium.page("Page.captureScreenshot", format="png",
                                          clip=clip)["data"])
    target = pathlib.Path(os.environ.get("AIORINGBUF_SCREENSHOT", tmp_path / "page.png"))
    target.write_bytes(shot)
    assert shot.startswith(b"\x89PNG")
    print(f"page screenshot: {target}")


def test_listening_beyond_loopback_needs_a_token(kernel) -> None:
    r = subprocess.run([sys.executable, str(APP), "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "web: --host 0.0.0.0 listens on 0.0.0.0, which other machines can reach, and every "
        "exec on this machine would be theirs to see: give a token (--token-file FILE or "
        "$AIORINGBUF_WEB_TOKEN)")
