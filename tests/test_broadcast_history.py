"""Broadcast(history=N) and numbered subscriptions, against the real kernel.

The source is a ring filled by ringgen.bpf.c, so every count is exact: a
record's own ``seq`` (0, 1, ...) is its hub number minus one, which checks
that the hub numbers exactly the events it took, in order.
"""

from __future__ import annotations

import random

import anyio
import pytest
from ringgen import Rec
from test_broadcast import wait_until

from aioringbuf import Broadcast, SlowSubscriberError
from aioringbuf.types import Numbered, Subscription

pytestmark = pytest.mark.anyio


async def take(sub: Subscription, n: int, timeout: float = 20) -> list[int]:
    """The hub numbers of the next ``n`` events, checked against the records' own."""
    got = []
    with anyio.fail_after(timeout):
        for _ in range(n):
            item = await sub.receive()
            assert isinstance(item, Numbered) and item.event.seq == item.seq - 1
            got.append(item.seq)
    return got


def accounted(sub: Subscription) -> bool:
    s = sub.stats()
    return s.offered == s.received + s.dropped + s.queue_len


async def test_numbered_subscriptions_count_from_one_and_plain_ones_are_unchanged(
    ringgen_factory,
) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        assert hub.seq == 0 and hub.history == 0
        assert len(hub.epoch) == 16 and int(hub.epoch, 16) >= 0
        assert hub.epoch != Broadcast(rb).epoch  # every hub its own
        async with hub.subscribe_numbered() as numbered, hub.subscribe() as plain:
            assert numbered.start == 0 and numbered.missed == 0
            gen.produce(10)
            assert await take(numbered, 10) == list(range(1, 11))
            assert [(await plain.receive()).seq for _ in range(10)] == list(range(10))
            assert hub.seq == 10
        assert hub.stats().history == 0  # nothing kept without history=N


async def test_a_subscriber_that_resumes_gets_exactly_what_it_missed(ringgen_factory) -> None:
    gen = ringgen_factory(1 << 20)
    async with gen.obj.ring_buffer("events", Rec) as rb, \
            Broadcast(rb, history=1000) as hub:
        async with hub.subscribe_numbered() as first:
            gen.produce(100)
            seen = await take(first, 60)  # it leaves with 40 still queued for it
        last = seen[-1]
        gen.produce(50)  # nobody subscribed: unobserved, but kept
        await wait_until(lambda: hub.seq == 150)
        assert hub.stats().unobserved == 50
        async with hub.subscribe_numbered(after=last, maxsize=500) as again:
            assert (again.missed, again.start) == (0, last)
            gen.produce(25)  # live events follow the replay, no gap, no repeat
            assert await take(again, 90 + 25) == list(range(last + 1, 176))
            s = again.stats()
            assert (s.replayed, s.missed, s.received, s.dropped) == (90, 0, 115, 0)
            assert accounted(again)
    assert rb.stats().kernel_drops == 0


async def test_a_gap_beyond_the_history_is_counted_exactly(ringgen_factory) -> None:
    gen = ringgen_factory(1 << 20)
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb, history=16) as hub:
        async with hub.subscribe_numbered() as first:
            gen.produce(5)
            assert await take(first, 5) == [1, 2, 3, 4, 5]
        gen.produce(100)
        await wait_until(lambda: hub.seq == 105)
        assert hub.stats().history == 16  # bounded, however many went by
        async with hub.subscribe_numbered(after=5) as again:
            replay = await take(again, 16)
            assert replay == list(range(90, 106))
            assert again.missed == 84 and again.start == 89
            assert again.missed + len(replay) == 105 - 5  # every event since 5, accounted
        async with hub.subscribe_numbered(after=0) as everything:  # all that is kept
            assert everything.missed == 89 and await take(everything, 16) == replay
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as bare:
        gen.produce(7)
        await wait_until(lambda: bare.seq == 7)
        async with bare.subscribe_numbered(after=3) as sub:  # no history: all missed
            assert (sub.missed, sub.stats().replayed) == (4, 0)
            with pytest.raises(anyio.WouldBlock):
                sub.receive_nowait()


async def test_resuming_at_random_moments_while_events_flow_loses_nothing(
    ringgen_factory,
) -> None:
    # A producer thread runs the whole time; the subscriber leaves and comes
    # back 30 times: what it receives is 1..n, each once, in order.
    gen = ringgen_factory(4 << 20)
    n = 30_000
    rng = random.Random(15)
    got: list[int] = []
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb, history=n) as hub:
        async with anyio.create_task_group() as tg:
            tg.start_soon(gen.produce_in_thread, n, 1000)
            after = 0
            for _ in range(30):
                async with hub.subscribe_numbered(after=after, maxsize=n) as sub:
                    assert sub.missed == 0
                    got += await take(sub, rng.randrange(1, n // 30))
                after = got[-1]
                await anyio.sleep(rng.random() * 0.01)
            async with hub.subscribe_numbered(after=after, maxsize=n) as sub:
                got += await take(sub, n - len(got), timeout=60)
    assert got == list(range(1, n + 1))
    assert rb.stats().kernel_drops == 0


async def test_a_replay_larger_than_the_queue_follows_the_policy(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb, history=100) as hub:
        gen.produce(50)
        await wait_until(lambda: hub.seq == 50)
        async with hub.subscribe_numbered(after=0, maxsize=10) as fits:  # max_replay=maxsize
            assert fits.missed == 40 and await take(fits, 10) == list(range(41, 51))
            assert fits.stats().dropped == 0 and not fits.disconnected
        async with hub.subscribe_numbered(after=0, maxsize=10, policy="disconnect",
                                          max_replay=50) as slow:
            assert slow.disconnected and hub.subscribers == 0
            assert await take(slow, 10) == list(range(1, 11))  # the prefix, then the error
            with pytest.raises(SlowSubscriberError):
                await slow.receive()
            assert accounted(slow) and slow.stats().dropped == 1
        assert hub.stats().disconnects == 1
        async with hub.subscribe_numbered(after=0, maxsize=10, max_replay=100) as newest:
            assert await take(newest, 10) == list(range(41, 51))
            s = newest.stats()
            assert (s.replayed, s.dropped, s.received) == (50, 40, 10) and accounted(newest)
        async with hub.subscribe_numbered(after=20, filter=lambda ev: ev.seq % 10 == 0) as tens:
            gen.produce(10)
            assert await take(tens, 4) == [21, 31, 41, 51]  # replayed and live: filtered


async def test_positions_that_are_not_this_hubs_are_refused(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        for bad in (-1, (1 << 20) + 1, 2.5, True):
            with pytest.raises(ValueError, match="history must be an int"):
                Broadcast(rb, history=bad)  # type: ignore[arg-type]
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb, history=8) as hub:
        gen.produce(3)
        await wait_until(lambda: hub.seq == 3)
        for bad in (-1, 4, 10**30, True, "2", 2.0):
            with pytest.raises(ValueError, match="not a position of this hub"):
                hub.subscribe_numbered(after=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_replay"):
            hub.subscribe_numbered(after=0, max_replay=-1)
        assert hub.stats().subscriptions == 0  # nothing was made
