"""The fleet view and the path's metrics: fleet_events(), `exec --from`, register_metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest
from cliproc import run_aioringbuf
from natsserver import NEEDS_NATS, nats_server
from pinning import cleanup, new_pin_dir
from shipping import marked

from aioringbuf._ship import ShipOptions, Shipper
from aioringbuf.exec import fleet_events, kernel_bytes, printable

nats = pytest.importorskip("nats")
prometheus_client = pytest.importorskip("prometheus_client")

pytestmark = NEEDS_NATS


@pytest.fixture
def pin_dirs(kernel, bpffs):
    made = [new_pin_dir(), new_pin_dir()]
    yield made
    for d in made:
        cleanup(d)


async def _ship_some(url: str, pin_dirs: list[str], hosts: list[str], mark: str,
                     registry=None) -> list[Shipper]:
    """Two shippers (two hosts, each with its own pinned ring) and a few marked execs."""
    shippers = [Shipper(ShipOptions([url], pin_dir=d, ring_size=1 << 20, host=h),
                        say=lambda _: None) for d, h in zip(pin_dirs, hosts, strict=True)]
    tasks = [asyncio.ensure_future(s.run()) for s in shippers]
    for s in shippers:
        await asyncio.wait_for(s.ready.wait(), 30)
    if registry is not None:
        from aioringbuf import register_metrics
        register_metrics(shippers[0], name="ship", registry=registry)
    for i in range(5):
        await asyncio.to_thread(subprocess.run, ["/bin/true", mark, str(i)], check=True)
    await asyncio.to_thread(subprocess.run, [b"/bin/true", mark.encode(), b"5", b"\xff\xfeok"],
                            check=True)
    for _ in range(200):
        if all(s.stats().in_flight == 0 and s.stats().avail_bytes == 0 for s in shippers):
            break
        await asyncio.sleep(0.05)
    for s in shippers:
        assert s.stats().connected
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return shippers


def test_fleet_events_and_exec_from_show_every_host(pin_dirs):
    mark = uuid.uuid4().hex
    hosts = [f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"]
    with nats_server() as server:
        asyncio.run(_ship_some(server.url, pin_dirs, hosts, mark))

        async def read(**kw):
            return [fe async for fe in fleet_events(server.url, follow=False, **kw)]

        everything = asyncio.run(read())
        only_a = asyncio.run(read(hosts=[hosts[0]]))
        assert {fe.host for fe in only_a} == {hosts[0]}
        for h in hosts:
            mine = [fe for fe in everything if fe.host == h]
            assert marked([fe for fe in mine if len(fe.event.argv) == 3], mark) == list(range(5))
            odd = [fe.event for fe in mine if fe.event.argv[1:3] == [mark, "5"]]
            assert len(odd) == 1  # the non-UTF-8 argument arrived with its exact bytes
            assert kernel_bytes(odd[0].argv[3]) == b"\xff\xfeok"
            assert printable(odd[0].argv[3]) == "\\xff\\xfeok"
        seqs = [fe.seq for fe in everything]
        assert seqs == sorted(seqs) and len(set(fe.key for fe in everything)) == len(everything)

        table = run_aioringbuf("exec", "--from", server.url, "--no-follow", "--name", "true")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:3] == ["HOST", "TIME", "PCOMM"]
        rows = [ln for ln in lines if mark in ln]
        assert sorted({r.split()[0] for r in rows}) == sorted(hosts) and len(rows) == 12
        as_json = run_aioringbuf("exec", "--from", server.url, "--no-follow", "--json")
        docs = [json.loads(ln) for ln in as_json.stdout.splitlines()]
        ours = [d for d in docs if mark in d["argv"]]
        assert len(ours) == 12 and {d["host"] for d in ours} == set(hosts)
        assert all("time" in d and d["comm"] == "true" for d in ours)


def test_exec_from_an_absent_broker_says_so_without_a_traceback():
    out = run_aioringbuf("exec", "--from", "nats://127.0.0.1:1", "--no-follow")
    assert out.returncode == 1
    assert "aioringbuf exec: reading nats://127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_path_metrics_equal_the_shippers_stats(pin_dirs):
    registry = prometheus_client.CollectorRegistry()
    mark = uuid.uuid4().hex
    with nats_server() as server:
        shippers = asyncio.run(_ship_some(server.url, pin_dirs[:1], ["m"], mark, registry))
    st = shippers[0].stats()
    text = prometheus_client.generate_latest(registry).decode()

    def value(metric: str) -> float:
        for line in text.splitlines():
            if line.startswith(metric + '{stream="ship"}'):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{metric} not in {text}")

    assert st.acknowledged >= 6 and st.published >= st.acknowledged
    assert value("aioringbuf_ship_published_total") == st.published
    assert value("aioringbuf_ship_acknowledged_total") == st.acknowledged
    assert value("aioringbuf_ship_duplicates_total") == st.duplicates
    assert value("aioringbuf_ship_reconnects_total") == st.reconnects == 0
    assert value("aioringbuf_ship_in_flight") == st.in_flight
    assert value("aioringbuf_ship_publish_latency_seconds_count") == st.latency_count
    assert value("aioringbuf_events_delivered_total") == st.delivered
    assert value("aioringbuf_events_kernel_dropped_total") == st.kernel_drops


@pytest.mark.timeout(90)
def test_ship_serves_its_metrics(pin_dirs):
    import time
    import urllib.request

    from natsserver import free_port
    from shipping import Agent

    port = free_port()
    with nats_server() as server:
        agent = Agent([server.url], pin_dirs[0], "metrics", "--metrics-port", str(port))
        try:
            agent.start()
            agent.wait_attached()
            subprocess.run(["/bin/true", uuid.uuid4().hex], check=True)
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=5) as r:
                        text = r.read().decode()
                    acked = 'aioringbuf_ship_acknowledged_total{stream="ship"}'
                    published = [ln for ln in text.splitlines() if ln.startswith(acked)]
                    if published and float(published[0].split()[-1]) >= 1:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, agent.stderr()
                time.sleep(0.2)
            assert 'aioringbuf_ship_connected{stream="ship"} 1.0' in text
            assert agent.stop() == 0
        finally:
            agent.close()


def test_exec_from_escapes_a_hostile_host_and_uses_the_senders_clock():
    """Anyone who may publish to the stream chooses the host name: it is escaped."""
    ev = {"ts_ns": 5, "pid": 1, "tid": 1, "ppid": 0, "uid": 0, "gid": 0, "comm": "sh",
          "cgroup_id": 1, "filename": "/bin/sh", "argv": ["sh"], "args_truncated": False,
          "ret": 0}
    body = json.dumps({"host": "\x1b[2Jevil\nfake row", "key": "k1",
                       "time_ns": 1_000_000_000_000_000_000, "event": ev}).encode()

    async def publish(url):
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="AIORINGBUF_EXEC", subjects=["aioringbuf.exec.>"])
        await js.publish("aioringbuf.exec.evil", body)
        await js.publish("aioringbuf.exec.evil", b"not an envelope")  # skipped
        await nc.close()

    with nats_server() as server:
        asyncio.run(publish(server.url))
        table = run_aioringbuf("exec", "--from", server.url, "--no-follow")
        as_json = run_aioringbuf("exec", "--from", server.url, "--no-follow", "--json")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert len(rows) == 2 and "\x1b" not in table.stdout
    assert rows[1].startswith("\\x1b[2Jevil\\nfak")
    doc = json.loads(as_json.stdout)
    assert doc["host"] == "\x1b[2Jevil\nfake row"  # JSON escapes it itself
    assert doc["time"] == "2001-09-09T01:46:40.000000000Z"
