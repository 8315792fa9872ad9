"""`aioringbuf ship` end to end: real kernel, real agents, real nats-server processes.

Marked execs (`/bin/true MARK i`) are the ground truth: every one of them
must be in the stream exactly once, in order for its host, whatever
happens to the agent or the broker meanwhile, or be counted as a kernel drop.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import time
import uuid

import pytest
from cliproc import run_aioringbuf
from natsserver import NEEDS_NATS, NatsCluster, NatsServer, nats_server
from pinning import cleanup, new_pin_dir, wait_gone
from shipping import RING_SIZE, Agent, exec_marked, marked, wait_for_marked

from aioringbuf import _pin, _syscall
from aioringbuf._exec import EXEC_OBJECT

nats = pytest.importorskip("nats")

pytestmark = NEEDS_NATS


@pytest.fixture
def pin_dir(kernel, bpffs):
    path = new_pin_dir()
    yield path
    cleanup(path)


@pytest.fixture
def agents():
    made: list[Agent] = []
    yield made
    for a in made:
        a.close()


def _host() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _drops(pin_dir: str) -> int:
    fd = _syscall.obj_get(os.path.join(pin_dir, "events_drops"))
    try:
        return _syscall.percpu_u64_sum(fd)
    finally:
        os.close(fd)


@pytest.mark.timeout(180)
def test_agent_killed_three_times_every_exec_exactly_once_in_order(pin_dir, agents):
    n = 1000
    mark, host = uuid.uuid4().hex, _host()
    rng = random.Random()
    kills = sorted(rng.sample(range(50, n - 50), 3))
    with nats_server() as server:
        agent = Agent([server.url], pin_dir, host)
        agents.append(agent)
        agent.start()
        agent.wait_attached()
        done = 0
        killed_at: list[int] = []
        for k in kills:
            # A kill point among the 20 execs of the last gap moves to after them
            # (else those indices would be executed, and shipped, twice).
            k = max(k, done)
            killed_at.append(k)
            exec_marked(mark, range(done, k))
            time.sleep(rng.uniform(0, 0.05))  # somewhere inside the publish pipeline
            agent.kill()
            done = k
            exec_marked(mark, range(done, done + 20))  # recorded while no agent runs
            done += 20
            agent.start()
            agent.wait_attached()
        exec_marked(mark, range(done, n))
        events = wait_for_marked([server.url], host, mark, n)
        assert agent.stop() == 0, agent.stderr()
        got = marked(events, mark)
        assert _drops(pin_dir) == 0
        assert len(got) == n, f"{len(got)} of {n}; kills at {killed_at}; {agent.stderr()}"
        assert got == list(range(n))  # exactly once, in order
        keys = [fe.key for fe in events]
        assert len(keys) == len(set(keys))
        assert len({fe.seq for fe in events}) == len(events)
        assert agent.runs == 4 and "Traceback" not in agent.stderr()
        log = agent.stderr()
        waiting = re.findall(r"reattached to .* \((\d+) bytes waiting in the ring\)", log)
        dups = re.findall(r"\((\d+) duplicates\)", log)
        print(f"crash test: {n} marked execs, kills at {killed_at}, {len(got)} in the stream, "
              f"{len(set(got))} distinct, in order; {len(events)} events of this host in all; "
              f"bytes left unacknowledged at each restart: {waiting}; duplicates JetStream "
              f"reported to the last run: {dups}")


@pytest.mark.timeout(180)
def test_stream_leader_killed_mid_stream_nothing_lost_nothing_duplicated(pin_dir, agents,
                                                                          tmp_path):
    n = 600
    mark, host = uuid.uuid4().hex, _host()
    cluster = NatsCluster(str(tmp_path))
    try:
        cluster.start()
        agent = Agent(cluster.urls, pin_dir, host, "--replicas", "3")
        agents.append(agent)
        agent.start()
        agent.wait_attached()
        exec_marked(mark, range(0, 200))
        leader = asyncio.run(_leader(cluster.urls))
        cluster.server(leader).kill()
        exec_marked(mark, range(200, n))
        survivors = [s.url for s in cluster.servers if s.running]
        events = wait_for_marked(survivors, host, mark, n, timeout=60)
        assert agent.stop() == 0, agent.stderr()
        got = marked(events, mark)
        new_leader = asyncio.run(_leader(survivors))
        assert new_leader != leader
        assert sorted(got) == list(range(n)), f"{len(got)} of {n}: {agent.stderr()}"
        assert len(got) == len(set(got)) == n  # nothing duplicated
        print(f"failover: leader {leader} killed after 200 of {n} marked execs, new leader "
              f"{new_leader}; {len(got)} in the stream, in order: {got == list(range(n))}")
        assert got == list(range(n))
    finally:
        cluster.stop()


async def _leader(urls: list[str]) -> str:
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        for _ in range(300):
            try:
                info = await js.stream_info("AIORINGBUF_EXEC")
                if info.cluster and info.cluster.leader:
                    return info.cluster.leader
            except Exception:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("the stream has no leader")
    finally:
        await nc.close()


@pytest.mark.timeout(120)
def test_broker_stopped_and_restarted_every_exec_in_the_stream_or_a_kernel_drop(
        pin_dir, agents, tmp_path):
    n = 400
    mark, host = uuid.uuid4().hex, _host()
    server = NatsServer(str(tmp_path))
    try:
        server.start()
        agent = Agent([server.url], pin_dir, host)
        agents.append(agent)
        agent.start()
        agent.wait_attached()
        exec_marked(mark, range(0, 100))
        server.stop()
        exec_marked(mark, range(100, 300))  # a few seconds with no broker
        server.start()
        exec_marked(mark, range(300, n))
        events = wait_for_marked([server.url], host, mark, n)
        assert agent.stop() == 0, agent.stderr()
        got = marked(events, mark)
        drops = _drops(pin_dir)
        assert len(got) == len(set(got))
        assert got == sorted(got)
        assert len(got) + drops >= n and n - len(got) <= drops
        assert drops == 0 and got == list(range(n))  # the 8 MiB ring held the outage
        assert agent.stderr().count("lost NATS") == 1, agent.stderr()
        assert "Traceback" not in agent.stderr()
    finally:
        server.kill()


@pytest.mark.timeout(120)
def test_a_full_ring_during_an_outage_counts_exactly_what_it_lost(pin_dir, agents, tmp_path):
    """A 16 KiB ring and no broker: the ring fills, the kernel counts the rest."""
    mark, host = uuid.uuid4().hex, _host()
    server = NatsServer(str(tmp_path))
    try:
        server.start()
        agent = Agent([server.url], pin_dir, host, "--window", "32")
        agent.argv[agent.argv.index("--ring-size") + 1] = str(16 * 1024)
        agents.append(agent)
        agent.start()
        agent.wait_attached()
        exec_marked(mark, range(0, 20))
        wait_for_marked([server.url], host, mark, 20)
        server.stop()
        before = _drops(pin_dir)
        exec_marked(mark, range(20, 320))
        server.start()
        deadline = time.monotonic() + 30
        while agent.stderr().count("publishing to") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the agent is back (its back-off) and drains the ring
        time.sleep(1)
        exec_marked(mark, range(320, 340))
        events = wait_for_marked([server.url], host, mark, 340, timeout=40)
        assert agent.stop() == 0, agent.stderr()
        lost = _drops(pin_dir) - before
        got = marked(events, mark)
        assert lost > 0  # 300 execs cannot fit in 16 KiB
        assert len(got) == len(set(got)) and got == sorted(got)
        missing = 340 - len(got)
        # Every marked exec is in the stream or among the kernel's drops; the
        # drops also count other processes' execs that arrived meanwhile.
        assert 0 < missing <= lost
        assert set(range(20)) <= set(got)  # shipped before the outage
        # Shipping resumed (other processes' exec bursts may still fill a 16 KiB
        # ring now and then: those drops are in `lost` too).
        assert set(range(320, 340)) & set(got)
    finally:
        server.kill()


@pytest.mark.timeout(90)
def test_broker_down_at_start_the_agent_waits_says_so_once_then_ships(pin_dir, agents,
                                                                      tmp_path):
    mark, host = uuid.uuid4().hex, _host()
    server = NatsServer(str(tmp_path))  # its port is chosen, nothing listens yet
    try:
        agent = Agent([server.url], pin_dir, host)
        agents.append(agent)
        agent.start()
        agent.wait_attached()
        exec_marked(mark, range(0, 10))
        time.sleep(2.5)  # several retries
        assert agent.stderr().count("waiting for NATS") == 1, agent.stderr()
        server.start()
        exec_marked(mark, range(10, 20))
        events = wait_for_marked([server.url], host, mark, 20)
        assert agent.stop() == 0
        assert marked(events, mark) == list(range(20))
        assert "Traceback" not in agent.stderr()
    finally:
        server.kill()


@pytest.mark.timeout(90)
def test_a_second_agent_on_the_same_ring_is_refused(pin_dir, agents):
    first = Agent(["nats://127.0.0.1:1"], pin_dir, _host())  # no broker needed
    agents.append(first)
    first.start()
    first.wait_attached()
    second = subprocess.run(first.argv, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "already consuming the ring pinned at" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.proc.poll() is None and first.stop() == 0
    first.start()  # the lock went with the first run: a new agent takes over
    first.wait_attached()
    first.kill()  # and a SIGKILL releases it too
    again = Agent(["nats://127.0.0.1:1"], pin_dir, _host())
    agents.append(again)
    again.start()
    again.wait_attached()


@pytest.mark.timeout(90)
def test_ship_remove_leaves_no_pinned_object_and_no_link(pin_dir, agents):
    with nats_server() as server:
        agent = Agent([server.url], pin_dir, _host())
        agents.append(agent)
        agent.start()
        agent.wait_attached()
        p = _pin.open_pinned(pin_dir, RING_SIZE)
        links, progs, maps = list(p.link_ids), list(p.prog_ids), list(p.map_ids.values())
        p.close()
        assert len(links) == len(_pin.program_sections(str(EXEC_OBJECT)))
        assert agent.stop() == 0
    out = run_aioringbuf("ship", "--remove", "--pin-dir", pin_dir)
    assert out.returncode == 0, out.stderr
    assert f"removed {len(links) + 4} pinned objects" in out.stderr
    assert not os.path.exists(pin_dir)
    assert wait_gone("link", links) == []
    assert wait_gone("prog", progs) == []
    assert wait_gone("map", maps) == []
    again = run_aioringbuf("ship", "--remove", "--pin-dir", pin_dir)
    assert again.returncode == 0 and "nothing pinned" in again.stderr
