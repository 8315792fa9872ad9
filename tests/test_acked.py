"""AckedRing: records stay in the ring until acknowledged, and come back with the same keys."""

from __future__ import annotations

import anyio
import pytest
from ringgen import DISCARD_ODD, RESERVE, Fixed, Rec, capacity

from aioringbuf._acked import AckedRing, boot_id

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]


def _ring(gen, event_type=Rec, **kw):
    return AckedRing(gen.obj.map_fd("events"), event_type,
                     drop_counter_fd=gen.obj.map_fd("events_drops"), **kw)


async def test_unacked_records_are_delivered_again_with_the_same_keys(ringgen_factory):
    gen = ringgen_factory(16 * 4096)
    gen.produce(10, b"x" * 8)
    async with _ring(gen) as ring:
        first = await ring.batch()
        assert [r.event.seq for r in first] == list(range(10))
        assert all(r.key == f"{boot_id()}:{ring.map_id}:{r.pos}" for r in first)
        assert [r.end for r in first[:-1]] == [r.pos for r in first[1:]]
        ring.ack(first[3].end)  # the first four are done
        assert ring.stats().acked_pos == first[4].pos
    async with _ring(gen) as again:  # a new consumer of the same map
        second = await again.batch()
    assert [r.key for r in second] == [r.key for r in first[4:]]
    assert [r.event.seq for r in second] == list(range(4, 10))


async def test_the_kernel_cannot_overwrite_unacked_records(ringgen_factory):
    size = 4 * 4096
    gen = ringgen_factory(size)
    fits = capacity(size, 16)
    gen.produce(fits, b"y" * 16)
    async with _ring(gen) as ring:
        got = await ring.batch()
        assert len(got) == min(fits, 1024)
        gen.produce(5, b"z" * 16)  # walked but not acked: the ring is still full
        assert ring.stats().kernel_drops == 5
        ring.ack(got[-1].end)
        assert ring.stats().acked_pos == got[-1].end
        gen.produce(3, b"z" * 16)
        later = await ring.batch()
        assert [r.event.seq for r in later][-3:] == [fits + 5, fits + 6, fits + 7]
        st = ring.stats()
        assert st.delivered + st.kernel_drops == gen.produced()


async def test_acking_the_last_record_hands_back_discarded_ones_after_it(ringgen_factory):
    gen = ringgen_factory(16 * 4096)
    gen.produce(4, flags=RESERVE | DISCARD_ODD)  # seq 1 and 3 are discarded
    async with _ring(gen, Fixed) as ring:
        got = await ring.batch()
        assert [r.event.seq for r in got] == [0, 2]
        ring.ack(got[-1].end)
        st = ring.stats()
        assert st.acked_pos == st.producer_pos == 4 * 24  # four 16-byte records, all back
        assert st.discarded == 2


async def test_a_batch_waits_for_records_and_acks(ringgen_factory):
    gen = ringgen_factory(16 * 4096)
    async with _ring(gen, poll_interval=0.01) as ring:
        got: list = []

        async def consume():
            while len(got) < 30:
                batch = await ring.batch()
                got.extend(batch)
                ring.ack(batch[-1].end)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                for _ in range(3):
                    await anyio.sleep(0.05)
                    await anyio.to_thread.run_sync(gen.produce, 10)
        assert [r.event.seq for r in got] == list(range(30))
        st = ring.stats()
        assert st.acked_pos == st.producer_pos and st.unacked_bytes == 0


async def test_ack_rejects_positions_outside_the_unacked_span(ringgen_factory):
    gen = ringgen_factory(16 * 4096)
    gen.produce(3)
    async with _ring(gen) as ring:
        got = await ring.batch()
        ring.ack(got[1].end)
        with pytest.raises(ValueError):
            ring.ack(got[0].end)
        with pytest.raises(ValueError):
            ring.ack(got[-1].end + 8)
