"""Broadcast against the real kernel: fan-out, joins and leaves, slow subscribers, closing.

The source is a ring filled by ringgen.bpf.c (BPF_PROG_TEST_RUN), so every
count is exact: a record's ``seq`` says which attempt it was.
"""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import Callable

import anyio
import pytest
from ringgen import Fixed, Rec, capacity

import aioringbuf
from aioringbuf import Broadcast, SlowSubscriberError, exec_events
from aioringbuf.types import Subscription

pytestmark = pytest.mark.anyio


async def wait_until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    """Poll ``predicate`` (it reads counters) until it holds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


async def take(sub: Subscription, n: int, timeout: float = 20) -> list[int]:
    with anyio.fail_after(timeout):
        return [(await sub.receive()).seq for _ in range(n)]


def accounted(sub: Subscription) -> bool:
    s = sub.stats()
    return s.offered == s.received + s.dropped + s.queue_len


async def test_every_subscriber_gets_every_event_in_order(ringgen_factory) -> None:
    gen = ringgen_factory(1 << 20)
    n = 5000
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        subs = [hub.subscribe(maxsize=n) for _ in range(3)]
        gen.produce(n, b"payload")
        got = [await take(sub, n) for sub in subs]
        stats = hub.stats()
        for sub in subs:
            await sub.aclose()
        assert hub.subscribers == 0
    assert got == [list(range(n))] * 3
    assert stats.events == stats.delivered // 3 == rb.stats().delivered == n
    assert (stats.dropped, stats.queued, stats.unobserved, stats.subscriptions) == (0, 0, 0, 3)
    assert rb.stats().kernel_drops == 0


async def test_subscribers_join_and_leave_at_any_time(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        async with hub.subscribe() as first:
            gen.produce(100)
            assert await take(first, 100) == list(range(100))  # so the hub took them
            async with hub.subscribe() as late:
                assert hub.subscribers == 2
                gen.produce(100)
                assert await take(late, 100) == list(range(100, 200))
            assert hub.subscribers == 1
            gen.produce(100)
            assert await take(first, 200) == list(range(100, 300))
        assert late.stats().received == 100
        assert hub.subscribers == 0
        gen.produce(7)  # nobody listens: drained and counted all the same
        await wait_until(lambda: hub.stats().events == 307)
        assert hub.stats().unobserved == 7


async def test_stalled_drop_oldest_subscriber_holds_back_nobody(ringgen_factory) -> None:
    # 20 laps of a 64 KiB ring while one subscriber never reads.
    ring = 64 * 1024
    chunk = capacity(ring, 8) // 2
    laps = 40
    gen = ringgen_factory(ring)
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        async with hub.subscribe(maxsize=10, policy="drop_oldest") as stalled, \
                hub.subscribe(maxsize=chunk) as reader:
            seen: list[int] = []
            for _ in range(laps):
                gen.produce(chunk, b"12345678")
                seen += await take(reader, chunk)
            n = chunk * laps
            assert seen == list(range(n))
            s = stalled.stats()
            assert (s.offered, s.received, s.dropped, s.queue_len) == (n, 0, n - 10, 10)
            assert await take(stalled, 10) == list(range(n - 10, n))  # the newest stay
    assert rb.stats().kernel_drops == 0
    assert rb.stats().consumer_pos > 15 * ring
    print(f"drop_oldest: {n} events, stalled subscriber dropped {s.dropped}, "
          f"kernel drops {rb.stats().kernel_drops}")


async def test_disconnect_policy_delivers_the_prefix_then_raises(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        slow = hub.subscribe(maxsize=10, policy="disconnect")
        fast = hub.subscribe(maxsize=100)
        async with slow, fast, anyio.create_task_group() as tg:
            noticed = anyio.Event()

            async def watch() -> None:
                await slow.wait_disconnected()
                noticed.set()

            tg.start_soon(watch)
            gen.produce(50)
            assert await take(fast, 50) == list(range(50))
            with anyio.fail_after(10):
                await noticed.wait()
            assert slow.disconnected and hub.subscribers == 1
            assert await take(slow, 10) == list(range(10))
            with pytest.raises(SlowSubscriberError, match="fell 10 events behind"):
                await slow.receive()
            with pytest.raises(SlowSubscriberError):  # and stays that way
                slow.receive_nowait()
            s = slow.stats()
            assert (s.offered, s.received, s.dropped, s.state) == (11, 10, 1, "disconnected")
        stats = hub.stats()
    assert (stats.disconnects, stats.subscribers, stats.delivered, stats.dropped) == (1, 0, 60, 1)
    assert rb.stats().kernel_drops == 0


async def test_with_no_subscribers_the_ring_never_fills(ringgen_factory) -> None:
    ring = 16 * 1024
    chunk = capacity(ring, 0) - 1
    gen = ringgen_factory(ring)
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        for i in range(1, 21):
            gen.produce(chunk)
            await wait_until(lambda i=i: hub.stats().events == i * chunk)
        assert hub.stats().unobserved == 20 * chunk
        assert rb.stats().kernel_drops == 0


async def test_filters_choose_what_is_offered(ringgen_factory) -> None:
    gen = ringgen_factory()

    def boom(ev: Rec) -> bool:
        raise ValueError("bad filter")

    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        even = hub.subscribe(maxsize=5, policy="disconnect", filter=lambda ev: ev.seq % 2 == 0)
        broken = hub.subscribe(filter=boom)
        async with even, broken:
            gen.produce(10)
            assert await take(even, 5) == [0, 2, 4, 6, 8]
            assert even.stats().dropped == 0 and not even.disconnected
            with pytest.raises(anyio.BrokenResourceError) as info:
                await broken.receive()
            assert isinstance(info.value.__cause__, ValueError)
            assert hub.subscribers == 1


async def test_receivers_sharing_a_subscription_all_wake(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub, \
            hub.subscribe() as sub:
        got: list[int] = []
        async with anyio.create_task_group() as tg:
            async def receiver() -> None:
                with anyio.fail_after(10):
                    got.append((await sub.receive()).seq)

            for _ in range(2):
                tg.start_soon(receiver)
            await wait_until(  # both parked
                lambda: sub._queue.statistics().tasks_waiting_receive == 2)
            await anyio.sleep(0.01)
            gen.produce(2)
        assert sorted(got) == [0, 1]


async def test_closing_a_subscription_wakes_its_receiver(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:
        sub = hub.subscribe()
        gen.produce(3)
        await wait_until(lambda: sub.stats().queue_len == 3)
        async with anyio.create_task_group() as tg:
            caught: list[BaseException] = []

            async def blocked() -> None:
                await take(sub, 3)
                try:
                    await sub.receive()
                except anyio.ClosedResourceError as exc:
                    caught.append(exc)

            tg.start_soon(blocked)
            await wait_until(lambda: sub._queue.statistics().tasks_waiting_receive == 1)  # parked
            sub.close()
        assert len(caught) == 1
        sub.close()  # idempotent
        with pytest.raises(anyio.ClosedResourceError):
            sub.receive_nowait()
        assert hub.subscribers == 0 and hub.stats().delivered == 3


async def test_leaving_the_hub_ends_subscriptions_after_their_queue(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        async with Broadcast(rb) as hub:
            sub = hub.subscribe()
            gen.produce(4)
            await wait_until(lambda: sub.stats().queue_len == 4)
        assert [ev.seq async for ev in sub] == [0, 1, 2, 3]
        assert hub.subscribers == 0
        late = hub.subscribe()  # after the end: ended at once
        with pytest.raises(anyio.EndOfStream):
            late.receive_nowait()
        sub.close()
        late.close()
        assert not rb.closed  # the hub iterates its source; it does not own it


async def test_close_ends_the_broadcast_inside_its_block(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        async with Broadcast(rb) as hub:
            sub = hub.subscribe()
            gen.produce(2)
            await wait_until(lambda: sub.stats().queue_len == 2)
            hub.close()
            hub.close()  # idempotent
            assert [ev.seq async for ev in sub] == [0, 1]
            gen.produce(3)
            await anyio.sleep(0.05)
            assert hub.stats().events == 2  # the source is no longer read
            sub.close()
        # The hub never owned its source: what it did not read is still there.
        assert [(await rb.receive()).seq for _ in range(3)] == [2, 3, 4]


async def test_a_closed_source_ends_the_broadcast(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec)
    async with rb, Broadcast(rb) as hub, hub.subscribe() as sub:
        gen.produce(2)
        assert await take(sub, 2) == [0, 1]
        await rb.aclose()
        with anyio.fail_after(10):
            with pytest.raises(anyio.EndOfStream):
                await sub.receive()


async def test_a_failing_source_breaks_subscribers_and_raises_at_exit(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Fixed, on_decode_error="raise")
    with pytest.raises(aioringbuf.RecordSizeError):
        async with rb, Broadcast(rb) as hub, hub.subscribe() as sub:
            gen.produce(1, b"x")  # 9 bytes: not a Fixed
            with anyio.fail_after(10):
                with pytest.raises(anyio.BrokenResourceError) as info:
                    await sub.receive()
            assert isinstance(info.value.__cause__, aioringbuf.RecordSizeError)


async def test_cancelled_subscribers_and_hub_leave_nothing_behind(ringgen_factory) -> None:
    # 40 subscribers join, read a random number of events, and leave: by
    # returning, by cancellation mid-receive, or by a disconnect. What each
    # received is consecutive; afterwards no task, subscription or queue is left.
    gen = ringgen_factory(1 << 20)
    rng = random.Random(5)
    tasks_before = len(anyio.get_running_tasks())
    results: list[tuple[list[int], str]] = []
    async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub:

        async def subscriber(i: int, stop: int) -> None:
            how = ("return", "cancel", "disconnect")[i % 3]
            policy = "disconnect" if how == "disconnect" else "drop_oldest"
            seqs: list[int] = []
            async with hub.subscribe(maxsize=20_000 if how != "disconnect" else 50,
                                     policy=policy) as sub:
                try:
                    with anyio.CancelScope() as scope:
                        async for ev in sub:
                            seqs.append(ev.seq)
                            if len(seqs) == stop:
                                if how == "cancel":
                                    scope.cancel()
                                    await anyio.sleep_forever()
                                if how == "return":
                                    break
                                await sub.wait_disconnected()  # stop reading until dropped
                except SlowSubscriberError:
                    pass
            results.append((seqs, how))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(subscriber, i, rng.randrange(1, 500))
            await wait_until(lambda: hub.subscribers == 40)
            for _ in range(20):
                gen.produce(1000)
                await anyio.sleep(0)
        stats = hub.stats()
        assert hub.subscribers == 0 and stats.queued == 0
    assert len(anyio.get_running_tasks()) == tasks_before
    assert len(results) == 40
    for seqs, _how in results:
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert stats.disconnects == sum(1 for _, how in results if how == "disconnect")
    assert stats.delivered == sum(len(seqs) for seqs, _ in results)
    assert rb.stats().kernel_drops == 0


async def test_cancelling_around_the_hub_leaves_nothing_behind(ringgen_factory) -> None:
    gen = ringgen_factory()
    tasks_before = len(anyio.get_running_tasks())
    with anyio.CancelScope() as scope:
        async with gen.obj.ring_buffer("events", Rec) as rb, Broadcast(rb) as hub, \
                hub.subscribe() as sub:
            gen.produce(1)
            assert (await sub.receive()).seq == 0
            scope.cancel()
            await sub.receive()  # cancelled while waiting
    assert scope.cancelled_caught
    assert len(anyio.get_running_tasks()) == tasks_before
    assert hub.subscribers == 0 and sub.closed and rb.closed


async def test_a_hub_over_exec_events(kernel) -> None:
    tag = f"aiorb-{uuid.uuid4().hex[:12]}"
    async with exec_events() as events, Broadcast(events) as hub:
        subs = [hub.subscribe(filter=lambda ev: tag in ev.argv) for _ in range(2)]
        for i in range(5):
            await anyio.to_thread.run_sync(
                lambda i=i: subprocess.run(["/bin/true", tag, str(i)], check=True))
        with anyio.fail_after(10):
            got = []  # loops, not a nested comprehension with await (3.10 refuses it)
            for sub in subs:
                got.append([(await sub.receive()).argv[2] for _ in range(5)])
        for sub in subs:
            sub.close()
        assert got == [["0", "1", "2", "3", "4"]] * 2
        assert hub.stats().events == events.stats().delivered
        assert events.stats().kernel_drops == 0


async def test_misuse_is_refused(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        hub = Broadcast(rb)
        with pytest.raises(RuntimeError, match="enter the hub first"):
            hub.subscribe()
        async with hub:
            with pytest.raises(ValueError, match="policy"):
                hub.subscribe(policy="block")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="maxsize"):
                hub.subscribe(maxsize=0)
        with pytest.raises(RuntimeError, match="only once"):
            async with hub:
                pass
