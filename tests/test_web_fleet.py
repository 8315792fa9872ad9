"""The web example's fleet view (``app.py --nats URL``), for real: a nats-server, an
``aioringbuf ship`` agent process, the web server, an httpx SSE client and Chromium.

A marked exec on this machine goes kernel -> agent -> JetStream -> web
server -> SSE, and arrives with its host; the page shows it in a HOST column.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from chromium import Chromium
from natsserver import NEEDS_NATS, NatsServer, nats_server
from pinning import cleanup, new_pin_dir
from shipping import Agent
from test_web_resume import ID, opened
from webserver import APP, ROOT, WebServer, named_program, run_all

nats = pytest.importorskip("nats")

pytestmark = NEEDS_NATS


@pytest.fixture
def fleet(kernel: None, bpffs: pathlib.Path,
          tmp_path: pathlib.Path) -> Iterator[tuple[NatsServer, str]]:
    """A broker and one agent shipping this machine's execs as host ``web-<random>``."""
    host = f"web-{uuid.uuid4().hex[:8]}"
    pin_dir = new_pin_dir()
    with nats_server() as server:
        agent = Agent([server.url], pin_dir, host)
        try:
            agent.start()
            agent.wait_attached()
            deadline = time.monotonic() + 30
            while not asyncio.run(_has_stream(server.url)):  # the agent makes it
                assert time.monotonic() < deadline, agent.stderr()
                time.sleep(0.1)
            yield server, host
            assert agent.stop() == 0, agent.stderr()
        finally:
            agent.close()
            cleanup(pin_dir)


async def _has_stream(url: str) -> bool:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().stream_info("AIORINGBUF_EXEC")
        return True
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()


@pytest.mark.timeout(120)
def test_a_marked_exec_reaches_the_page_through_the_fleet_with_its_host(
    fleet: tuple[NatsServer, str], chromium: Chromium, tmp_path: pathlib.Path,
) -> None:
    server, host = fleet
    web = WebServer(tmp_path / "web.log", "--nats", server.url)
    try:
        assert f"the fleet from {server.url}" in web.text()
        name, prog = named_program(tmp_path, prefix="fleet")

        async def sse() -> list[tuple[str, dict]]:
            async with httpx.AsyncClient(base_url=web.url, timeout=30) as client, \
                    client.stream("GET", "/events", params={"name": f"^{name}$"}) as r:
                reader = await opened(r)
                await asyncio.to_thread(run_all, [[prog, "one"], [prog, "two"]])
                return [(reader.last_id, ev) for _, ev in await reader.execs(2)]

        got = asyncio.run(sse())
        assert [ev["argv"][1:] for _, ev in got] == [["one"], ["two"]]
        assert {ev["host"] for _, ev in got} == {host}
        assert all(ev["comm"] == name and ID.fullmatch(i) for i, ev in got)
        # The page: a HOST column, shown only for a fleet.
        chromium.page("Page.enable")
        chromium.page("Page.navigate", url=f"{web.url}/?name=^{name}$")
        chromium.wait_js("document.documentElement.dataset.state === 'live'")
        run_all([[prog, "three"]])
        row = chromium.wait_js("[...document.querySelectorAll('#rows tr')]"
                               ".map(tr => [...tr.cells].map(c => c.innerText))"
                               ".find(cells => cells.join(' ').includes('three'))")
        assert row[0] == host and row[-1].endswith(f"{name} three")
        assert chromium.js("getComputedStyle(document.querySelector('th.host')).display") \
            == "table-cell"
    finally:
        web.stop()


def test_without_a_broker_or_its_stream_the_fleet_view_says_so_in_one_line(
    kernel: None,
) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(APP), "--port", "0", "--nats", "nats://127.0.0.1:1"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "web: no NATS server answered at nats://127.0.0.1:1" in r.stderr
    assert "Traceback" not in r.stderr
    with nats_server() as server:  # a broker no agent has used yet
        r = subprocess.run([sys.executable, str(APP), "--port", "0", "--nats", server.url],
                           capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "has no stream AIORINGBUF_EXEC: start an agent there first" in r.stderr
    assert "Traceback" not in r.stderr
