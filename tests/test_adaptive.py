"""Adaptive wakeups (AIORINGBUF_SUBMIT_ADAPTIVE / _OUTPUT_ADAPTIVE) on the real kernel.

bpf/tests/adaptive.bpf.c writes one 16-byte record (24 ring bytes) per test
run; its ``events_wakeup`` entry sets the byte threshold and the delay. The
delay clock is bpf_ktime_get_ns, which is CLOCK_MONOTONIC: setting
``last_ns`` to ``time.monotonic_ns()`` keeps the delay rule quiet.
"""

from __future__ import annotations

import os
import struct
import time

import anyio
import pytest
from kernelstate import open_fds
from ringgen import Fixed, packet

import aioringbuf
from aioringbuf import _syscall

pytestmark = pytest.mark.anyio

SPAN = 24  # ring bytes per record: 8-byte header + 16


class Adaptive:
    def __init__(self, obj: aioringbuf.types.BpfObject) -> None:
        self.obj = obj
        self.prog_fd = obj.program_fd("adaptive")

    def configure(self, bytes_: int, delay_ns: int, quiet: bool = True) -> None:
        last = time.monotonic_ns() if quiet else 0
        _syscall.map_update(self.obj.map_fd("events_wakeup"), 0,
                            struct.pack("<QQQ", bytes_, delay_ns, last))

    def produce(self, n: int, form: int = 0) -> None:
        """``form``: 0 SUBMIT_ADAPTIVE, 1 OUTPUT_ADAPTIVE, 2 SUBMIT_ADAPTIVE_AT."""
        for _ in range(n):
            _syscall.prog_test_run(self.prog_fd, packet(flags=form))

    def produced(self) -> int:
        return int.from_bytes(_syscall.map_lookup(self.obj.map_fd("counters"), 0, 8), "little")


@pytest.fixture
def adaptive(bpf_objects):
    obj = aioringbuf.load(bpf_objects / "adaptive.bpf.o", attach=False).open()
    gen = Adaptive(obj)
    yield gen
    os.close(gen.prog_fd)
    obj.close()


async def woken_by(rb: aioringbuf.RingBuffer, produce, wait: float = 0.3) -> bool:
    """Does ``produce()``, run while ``rb``'s consumer is caught up and waiting, wake it?"""
    async with anyio.create_task_group() as tg:
        async def later() -> None:
            await anyio.sleep(0.02)  # the receiver is registered with the loop by now
            produce()
        tg.start_soon(later)
        with anyio.move_on_after(wait) as scope:
            await rb.receive()
    return not scope.cancelled_caught


@pytest.mark.parametrize("form", [0, 1, 2], ids=["submit", "output", "submit_at"])
@pytest.mark.parametrize("threshold", [10 * SPAN, 256], ids=["divided", "power-of-two"])
async def test_wakes_only_when_the_backlog_crosses_the_threshold(adaptive, form,
                                                                 threshold) -> None:
    # A power of two takes the header's division-free test; 240 the division.
    adaptive.configure(bytes_=threshold, delay_ns=60 * 10**9)
    quiet = (threshold - 1) // SPAN  # the records that stay below the threshold
    async with adaptive.obj.ring_buffer("events", Fixed) as rb:
        assert not await woken_by(rb, lambda: adaptive.produce(quiet, form))
        assert rb.stats().avail_bytes == quiet * SPAN  # there, unannounced
        # The next record crosses the threshold: the consumer wakes and gets them all.
        assert await woken_by(rb, lambda: adaptive.produce(1, form), wait=5)
        got = [await rb.receive() for _ in range(quiet)]
        assert rb.stats().delivered == quiet + 1 and rb.stats().kernel_drops == 0
    assert [e.seq for e in got] == list(range(1, quiet + 1))


@pytest.mark.parametrize("form", [0, 2], ids=["submit", "submit_at"])
async def test_wakes_at_once_when_the_delay_has_passed(adaptive, form) -> None:
    # A delay of 1 ns has always passed: every record wakes, like the default.
    adaptive.configure(bytes_=1 << 20, delay_ns=1)
    async with adaptive.obj.ring_buffer("events", Fixed) as rb:
        for _ in range(5):
            assert await woken_by(rb, lambda: adaptive.produce(1, form), wait=5)


async def test_flush_interval_delivers_the_tail_of_a_burst(adaptive) -> None:
    adaptive.configure(bytes_=10 * SPAN, delay_ns=60 * 10**9)
    async with adaptive.obj.ring_buffer("events", Fixed, flush_interval=0.02) as rb:
        with anyio.fail_after(5):
            assert await woken_by(rb, lambda: adaptive.produce(3), wait=5)
            assert [(await rb.receive()).seq for _ in range(2)] == [1, 2]


async def test_a_lagging_consumer_loses_nothing_it_has_room_for(adaptive) -> None:
    # Defaults (16 KiB, 500 us); a backlog far over the threshold; exact counts.
    adaptive.configure(bytes_=0, delay_ns=0, quiet=False)
    async with adaptive.obj.ring_buffer("events", Fixed, flush_interval=0.01) as rb:
        for _ in range(10):  # 24 KiB a round: fits beside the batch still held
            await anyio.to_thread.run_sync(adaptive.produce, 1000)
            with anyio.fail_after(10):
                for _ in range(1000):
                    await rb.receive()
        s = rb.stats()
    assert s.delivered == adaptive.produced() == 10_000
    assert s.kernel_drops == 0


async def test_overload_is_counted_exactly(adaptive) -> None:
    adaptive.configure(bytes_=0, delay_ns=0, quiet=False)
    async with adaptive.obj.ring_buffer("events", Fixed, flush_interval=0.01) as rb:
        adaptive.produce(5000)  # the 64 KiB ring holds 2730
        with anyio.fail_after(10):
            while rb.stats().delivered + rb.stats().kernel_drops < adaptive.produced():
                await rb.receive()
        s = rb.stats()
    assert s.delivered == (64 * 1024 - 1) // SPAN
    assert s.delivered + s.kernel_drops == 5000


async def next_step(rb, style: str) -> list[int]:
    """One step of ``style``: the seqs it delivered."""
    if style == "arrays":
        return [int(x) for x in (await rb.arrays().__anext__())["seq"]]
    if style == "batches":
        return [e.seq for e in await rb.batches().__anext__()]
    first = await rb.receive()
    return [first.seq] + [(await rb.receive()).seq for _ in range(rb.stats().queue_len)]


@pytest.mark.parametrize("style", ["iter", "batches", "arrays"])
async def test_a_caught_up_step_waits_for_the_kernels_announcement(adaptive, style) -> None:
    # After a step that read everything, records written since without an
    # announcement are not read at once (that spins at the producer's heels):
    # the next step waits for the kernel's wakeup, or for flush_interval.
    adaptive.configure(bytes_=10 * SPAN, delay_ns=60 * 10**9)
    async with adaptive.obj.ring_buffer("events", Fixed, flush_interval=2.0) as rb:
        assert rb._source.announcements() is not None  # the loader saw events_wakeup
        adaptive.produce(10)  # crosses 10 * SPAN: announced
        with anyio.fail_after(5):
            assert await next_step(rb, style) == list(range(10))
        adaptive.produce(3)  # below the next multiple: not announced
        got: list[int] = []
        async with anyio.create_task_group() as tg:
            async def step() -> None:
                got.extend(await next_step(rb, style))
            tg.start_soon(step)
            await anyio.sleep(0.3)
            assert got == []  # waiting, with three records in the ring
            t = anyio.current_time()
            adaptive.produce(7)  # the backlog crosses 10 * SPAN again
        assert anyio.current_time() - t < 1.5  # woken, not the 2 s flush_interval
        assert got == list(range(10, 20))
        assert rb.stats().delivered == 20


async def test_without_flush_interval_a_step_reads_at_once(adaptive) -> None:
    # No flush_interval: the tail of a burst would wait for ever, so a step
    # reads what is there (level-triggered), as on any ring.
    adaptive.configure(bytes_=10 * SPAN, delay_ns=60 * 10**9)
    async with adaptive.obj.ring_buffer("events", Fixed) as rb:
        adaptive.produce(10)
        with anyio.fail_after(5):
            assert await next_step(rb, "batches") == list(range(10))
            adaptive.produce(3)
            assert await next_step(rb, "batches") == [10, 11, 12]


async def test_closing_ends_a_wait_for_an_announcement_and_releases_its_fds(adaptive) -> None:
    adaptive.configure(bytes_=10 * SPAN, delay_ns=60 * 10**9)
    async with adaptive.obj.ring_buffer("events", Fixed, flush_interval=30.0):
        pass  # warm up the event loop's own lazily opened fds
    before = open_fds()
    rb = adaptive.obj.ring_buffer("events", Fixed, flush_interval=30.0)
    assert any("anon_inode:[eventpoll]" in f for f in open_fds() - before)  # its epoll set
    result: list[BaseException] = []
    async with rb:
        adaptive.produce(10)
        assert await next_step(rb, "batches") == list(range(10))

        async def reader() -> None:
            try:
                await next_step(rb, "batches")  # caught up: waits for an announcement
            except anyio.ClosedResourceError as exc:
                result.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.sleep(0.05)
                await rb.aclose()
    assert len(result) == 1
    assert open_fds() == before
