"""The JetStream test servers themselves: they start, keep data across restarts, fail over."""

from __future__ import annotations

import asyncio
import os

import pytest
from natsserver import NATS_SERVER, nats_cluster, nats_server

nats = pytest.importorskip("nats")

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CI"),
    reason="nats-server is not installed (scripts/test.sh installs it)",
)


async def _stream(js, replicas: int) -> None:
    for _ in range(100):  # a fresh cluster elects its meta leader first
        try:
            await js.add_stream(name="T", subjects=["t.>"], num_replicas=replicas)
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError("could not create the stream")


def test_single_server_keeps_messages_across_a_restart():
    async def publish(url):
        nc = await nats.connect(url)
        js = nc.jetstream()
        await _stream(js, 1)
        ack = await js.publish("t.a", b"one", headers={"Nats-Msg-Id": "k1"})
        again = await js.publish("t.a", b"one", headers={"Nats-Msg-Id": "k1"})
        await nc.close()
        return ack, again

    async def count(url):
        nc = await nats.connect(url)
        info = await nc.jetstream().stream_info("T")
        await nc.close()
        return info.state.messages

    with nats_server() as server:
        ack, again = asyncio.run(publish(server.url))
        assert ack.seq == 1 and not ack.duplicate
        assert again.seq == 1 and again.duplicate  # Nats-Msg-Id dedup
        server.kill()
        server.start()
        assert asyncio.run(count(server.url)) == 1


@pytest.mark.timeout(90)
def test_cluster_elects_a_new_leader_when_the_leader_dies():
    async def leader(urls, create):
        nc = await nats.connect(servers=urls)
        js = nc.jetstream()
        if create:
            await _stream(js, 3)
        for _ in range(200):
            try:
                info = await js.stream_info("T")
                if info.cluster and info.cluster.leader:
                    await nc.close()
                    return info.cluster.leader
            except Exception:
                pass
            await asyncio.sleep(0.1)
        await nc.close()
        raise AssertionError("no leader")

    with nats_cluster() as cluster:
        first = asyncio.run(leader(cluster.urls, True))
        cluster.server(first).kill()
        survivors = [s.url for s in cluster.servers if s.running]
        second = asyncio.run(leader(survivors, False))
        assert second != first
