"""SSE that resumes, for real: uvicorn processes, httpx clients that leave and come back,
a headless Chromium whose network is cut by a proxy, and a server that restarts.

Every event carries ``id: EPOCH-SEQ``; a client that reconnects with
``Last-Event-ID`` gets what it missed from the hub's history, or
``event: missed`` with the exact count of what is beyond it. Exactness is
checked against a witness: a client connected the whole time, without a
filter, whose ids run without a gap.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from chromium import Chromium
from tcpproxy import TcpProxy
from webserver import WebServer, named_program, run_all

TIMEOUT = httpx.Timeout(30)
ID = re.compile(r"([0-9a-f]{16})-(\d+)")


@pytest.fixture(scope="module")
def server(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A history and queue far larger than what other tests' execs add meanwhile."""
    srv = WebServer(tmp_path_factory.mktemp("web") / "server.log", "--queue-size", "65536",
                    "--history", "65536", "--ring-size", str(32 << 20))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tiny(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A history of 8 events: any real gap goes beyond it."""
    srv = WebServer(tmp_path_factory.mktemp("web") / "server.log", "--history", "8",
                    "--ring-size", str(32 << 20))
    yield srv
    srv.stop()


class Reader:
    """A text/event-stream read as EventSource reads it: ``last_id`` is what it would
    send as Last-Event-ID (set by any ``id:`` field, dispatched or not)."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.status_code
        self.last_id = ""
        self._lines = response.aiter_lines()

    async def block(self) -> tuple[str, str | None, str]:
        """The next block: (event, data or None if it dispatches nothing, last_id)."""
        event, data = "message", []
        async for line in self._lines:
            if not line:
                if data or event != "message" or self.last_id:
                    return event, ("\n".join(data) if data else None), self.last_id
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                self.last_id = value
        raise EOFError("the stream ended")

    async def messages(self) -> AsyncIterator[tuple[str, str, int]]:
        """Dispatched messages: (event, data, seq of the id in force)."""
        while True:
            event, data, last = await self.block()
            if data is not None:
                yield event, data, seq_of(last)

    async def execs(self, n: int) -> list[tuple[int, dict]]:
        got: list[tuple[int, dict]] = []
        with anyio.fail_after(30):
            async for event, data, seq in self.messages():
                assert event == "exec", (event, data)  # nothing missed, nothing dropped
                got.append((seq, json.loads(data)))
                if len(got) == n:
                    return got
        raise AssertionError("unreachable")


def seq_of(event_id: str) -> int:
    m = ID.fullmatch(event_id)
    assert m, event_id
    return int(m.group(2))


def epoch_of(event_id: str) -> str:
    m = ID.fullmatch(event_id)
    assert m, event_id
    return m.group(1)


async def opened(response: httpx.Response) -> Reader:
    """Past the opening block, which carries the id the stream starts after."""
    reader = Reader(response)
    with anyio.fail_after(30):
        event, data, last = await reader.block()
    assert (event, data) == ("message", None) and ID.fullmatch(last), (event, data, last)
    return reader


pytestmark = pytest.mark.anyio


async def test_a_client_that_reconnects_gets_exactly_the_events_it_missed(
    server: WebServer, tmp_path: pathlib.Path
) -> None:
    name, prog = named_program(tmp_path)
    params = {"name": f"^{name}$"}
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        async with client.stream("GET", "/events", params=params) as r:
            first = await opened(r)
            start_id = first.last_id
            await anyio.to_thread.run_sync(run_all, [[prog, str(i)] for i in range(3)])
            before = await first.execs(3)
        left_at = first.last_id  # the client is gone; three more execs happen
        await anyio.to_thread.run_sync(run_all, [[prog, str(i)] for i in range(3, 8)])
        # The header wins over an (older) ?last_event_id=, as EventSource needs.
        async with client.stream("GET", "/events", params={**params, "last_event_id": start_id},
                                 headers={"last-event-id": left_at}) as r:
            again = await opened(r)
            assert again.last_id == left_at  # it starts after what it had
            replayed = await again.execs(5)
            await anyio.to_thread.run_sync(run_all, [[prog, "8"], [prog, "9"]])
            live = await again.execs(2)
        # A client that cannot set headers gives the id in the query.
        async with client.stream("GET", "/events",
                                 params={**params, "last_event_id": left_at}) as r:
            by_query = await (await opened(r)).execs(7)
    args = [ev["argv"][1] for _, ev in before + replayed + live]
    assert args == [str(i) for i in range(10)]  # each once, in order, nothing missed
    seqs = [seq for seq, _ in before + replayed + live]
    assert seqs == sorted(set(seqs)) and seqs[0] > seq_of(start_id)
    assert epoch_of(left_at) == epoch_of(start_id) == epoch_of(again.last_id)
    assert [ev["argv"][1] for _, ev in by_query] == [str(i) for i in range(3, 10)]
    assert [s for s, _ in by_query] == seqs[3:]


async def test_a_gap_beyond_the_history_is_one_missed_event_with_the_exact_count(
    tiny: WebServer, tmp_path: pathlib.Path
) -> None:
    name, prog = named_program(tmp_path)
    async with httpx.AsyncClient(base_url=tiny.url, timeout=TIMEOUT) as client, \
            client.stream("GET", "/events") as w:
        witness = await opened(w)
        seen: dict[int, str] = {}  # seq -> data, for every event of the server
        marked: dict[int, str] = {}  # seq -> argv[1] of our execs
        async with anyio.create_task_group() as tg:
            async def watch() -> None:
                async for event, data, seq in witness.messages():
                    assert event == "exec" and (not seen or seq == max(seen) + 1), event
                    seen[seq] = data
                    ev = json.loads(data)
                    if ev["comm"] == name:
                        marked[seq] = ev["argv"][1]

            tg.start_soon(watch)
            async with client.stream("GET", "/events") as r:
                left_at = (await opened(r)).last_id
            await anyio.to_thread.run_sync(run_all, [[prog, str(i)] for i in range(30)])
            with anyio.fail_after(30):
                while len(marked) < 30:
                    await anyio.sleep(0.01)
            async with client.stream("GET", "/events", headers={"last-event-id": left_at}) as r:
                again = Reader(r)
                with anyio.fail_after(30):
                    event, data, _ = await again.block()
                    assert event == "missed", (event, data)
                    gap = json.loads(data or "")
                    _, nothing, resumed_after = await again.block()
                assert nothing is None
                got: list[tuple[int, str]] = []
                with anyio.fail_after(30):
                    async for event, data, seq in again.messages():
                        assert event == "exec", event
                        got.append((seq, data))
                        if seq >= max(marked):
                            break
            tg.cancel_scope.cancel()
    after = seq_of(left_at)
    n = gap["missed"]
    assert gap["exact"] is True and n >= 30 - 8
    assert seq_of(resumed_after) == after + n  # what follows starts right after the gap
    assert [s for s, _ in got] == list(range(after + n + 1, after + n + 1 + len(got)))
    assert all(seen[s] == data for s, data in got)  # the very events the witness got
    # Every event since the id is replayed or in the count, exactly.
    assert len([s for s in seen if after < s <= after + n]) == n
    in_gap = [a for s, a in marked.items() if s <= after + n]
    replayed = [json.loads(d)["argv"][1] for _, d in got if json.loads(d)["comm"] == name]
    assert in_gap + replayed == [str(i) for i in range(30)]
    print(f"gap: {n} missed (history 8), {len(got)} replayed, {len(in_gap)} of 30 ours missed")


async def test_an_id_from_another_run_is_a_gap_of_unknown_size(
    server: WebServer, tmp_path: pathlib.Path
) -> None:
    name, prog = named_program(tmp_path)
    params = {"name": f"^{name}$"}
    await anyio.to_thread.run_sync(run_all, [[prog, "a"], [prog, "b"]])
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        async with client.stream("GET", "/events") as r:
            epoch = epoch_of((await opened(r)).last_id)
        stale = ("f" if epoch[0] != "f" else "e") + epoch[1:] + "-12"
        async with client.stream("GET", "/events", params=params,
                                 headers={"last-event-id": stale}) as r:
            again = Reader(r)
            with anyio.fail_after(30):
                event, data, _ = await again.block()
            assert event == "missed"
            gap = json.loads(data or "")
            assert gap["exact"] is False and gap["missed"] >= 0
            got = await again.execs(2)  # this run's events, from its start: ours included
    assert [ev["argv"][1] for _, ev in got] == ["a", "b"]
    assert all(epoch_of(again.last_id) == epoch for _ in got)


@pytest.mark.parametrize("value", [
    "nope", "0123456789abcdef-01", "0123456789ABCDEF-1", "0123456789abcdef--1",
    "0123456789abcdef-" + "9" * 20, "0123456789abcdef-1,2", "x" * 4000,
    "0123456789abcdef-\u0661",  # an Arabic-Indic digit: \d would take it, we do not
])
async def test_a_bad_last_event_id_is_a_400_that_echoes_nothing(
    server: WebServer, value: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        for how in ("header", "query"):
            if how == "header":
                r = await client.get("/events", headers={"last-event-id": value.encode()})
            else:
                r = await client.get("/events", params={"last_event_id": value})
            assert r.status_code == 400, (how, r.status_code)
            assert r.text.startswith("Last-Event-ID must be an id this server sent")
            assert value.strip() not in r.text


async def test_ids_this_server_never_sent_are_refused(server: WebServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        async with client.stream("GET", "/events") as r:
            current = (await opened(r)).last_id
        epoch = epoch_of(current)
        r = await client.get("/events", headers={"last-event-id": f"{epoch}-{10**18}"})
        assert r.status_code == 400 and "beyond the newest event" in r.text
        r = await client.get("/events", headers=[("last-event-id", current),
                                                 ("last-event-id", current)])
        assert r.status_code == 400 and "give one Last-Event-ID" in r.text
        async with client.stream("GET", "/events", headers={"last-event-id": ""}) as r:
            assert r.status_code == 200  # empty: no id, as EventSource means it


# -- a real browser, a real network cut, a real restart ------------------------------------

def rows_of(browser: Chromium, name: str) -> list[str]:
    return browser.js(
        f"[...document.querySelectorAll('#rows tr')].map(tr => tr.innerText)"
        f".filter(t => t.includes('{name}')).map(t => t.split('{name}').pop().trim())")


@pytest.mark.timeout(180)
def test_the_page_resumes_after_a_network_cut_and_a_server_restart(
    server: WebServer, chromium: Chromium, tmp_path: pathlib.Path,
) -> None:
    name, prog = named_program(tmp_path, prefix="resume")
    proxy = TcpProxy(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    restarted: WebServer | None = None
    try:
        chromium.page("Page.enable")
        chromium.page("Page.navigate", url=f"http://127.0.0.1:{proxy.port}/?name=^{name}$")
        chromium.wait_js("document.documentElement.dataset.state === 'live'")
        run_all([[prog, f"n{i}"] for i in range(3)])
        chromium.wait_js("document.querySelectorAll('#rows tr').length >= 3")
        # The network goes away; execs happen meanwhile; it comes back.
        proxy.cut()
        chromium.wait_js("document.documentElement.dataset.state === 'reconnecting'")
        run_all([[prog, f"n{i}"] for i in range(3, 7)])
        proxy.allow()
        chromium.wait_js("document.querySelectorAll('#rows tr').length >= 7")
        chromium.wait_js("document.documentElement.dataset.state === 'live'")
        assert rows_of(chromium, name) == [f"n{i}" for i in reversed(range(7))]  # no repeats
        assert chromium.js("document.getElementById('missed').textContent") == "0"
        assert "resumed" in chromium.js("document.getElementById('notice').textContent")
        # The server is replaced by a new run: the page keeps its rows and says that
        # an unknown number of events went by.
        restarted = WebServer(tmp_path / "restarted.log")
        proxy.target = ("127.0.0.1", int(restarted.url.rsplit(":", 1)[1]))
        proxy.cut(refuse=False)
        chromium.wait_js("document.getElementById('notice').textContent"
                         ".includes('restarted server')")
        run_all([[prog, "n7"]])
        chromium.wait_js("document.querySelectorAll('#rows tr').length >= 8")
        assert rows_of(chromium, name) == [f"n{i}" for i in reversed(range(8))]
        print("page:", chromium.js("document.getElementById('notice').textContent"))
    finally:
        proxy.close()
        if restarted is not None:
            restarted.stop()
