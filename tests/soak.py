"""An overload soak: a producer far faster than the consumer, for a while.

Shared by tests/test_soak.py (about 30 s in CI) and benchmarks/soak.py (ten
minutes and more). Measures what the guarantees are about: exact
accounting, bounded memory, a responsive event loop, and no drops once the
producer stops.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field

import anyio
from ringgen import Generator, Rec

from aioringbuf import _syscall


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@dataclass
class SoakResult:
    seconds: float
    produced: int = 0
    delivered: int = 0
    kernel_drops: int = 0
    queue_drops: int = 0
    drops_when_producer_stopped: int = 0
    out_of_order: int = 0
    rss_kib: list[int] = field(default_factory=list)  # sampled every second
    max_timer_lateness: float = 0.0  # wall time: includes the machine's preemptions
    max_busy_lateness: float = 0.0  # this thread's CPU time past the timer: our code's share
    consumer_cpu_s: float = 0.0

    @property
    def rss_growth_after_warmup_kib(self) -> int:
        warm = self.rss_kib[len(self.rss_kib) // 4 :]
        return max(warm) - warm[0] if warm else 0


# The producer runs niced: on a 2-core machine any third busy process would
# otherwise make the lateness measure CPU contention, not our event loop.
PRODUCER = """
import os, sys, time
from aioringbuf import _syscall
os.nice(10)
fd = _syscall.obj_get(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
pkt = bytes(16)
while time.monotonic() < deadline:
    try:
        _syscall.prog_test_run(fd, pkt, repeat=50_000)
    except InterruptedError:
        pass
"""


# The consumer pauses this long every PAUSE_EVERY events, so that it takes
# at most 200k events/s on any machine and either implementation: the C
# extension alone would keep up with the test-run producer, and an overload
# soak needs a producer that outruns its consumer.
PAUSE_EVERY, PAUSE = 1000, 0.005


async def soak(gen: Generator, seconds: float, pinned_prog: str,
               overflow: str = "block") -> SoakResult:
    """Run the soak; the producer is another process, so it never waits for our GIL."""
    res = SoakResult(seconds)
    stop = anyio.Event()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    _syscall.obj_pin(gen.prog_fd, pinned_prog)

    async def producer() -> None:
        try:
            await anyio.run_process(
                [sys.executable, "-c", PRODUCER, pinned_prog, str(seconds)],
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)),
            )
        finally:
            os.unlink(pinned_prog)
            stop.set()

    async def ticker() -> None:
        # Another task's timer: how late does it fire while we consume? On the
        # wall clock that includes the time other processes had the CPU (a
        # shared machine); the loop thread's CPU time across the tick counts
        # only what our own code ran before the timer could fire.
        while not stop.is_set():
            t, c = time.monotonic(), time.thread_time()
            await anyio.sleep(0.01)
            res.max_timer_lateness = max(res.max_timer_lateness, time.monotonic() - t - 0.01)
            res.max_busy_lateness = max(res.max_busy_lateness, time.thread_time() - c - 0.01)

    async def sampler() -> None:
        while not stop.is_set():
            res.rss_kib.append(rss_kib())
            await anyio.sleep(1)

    async with gen.obj.ring_buffer("events", Rec, maxsize=4096, overflow=overflow) as rb:
        last = -1
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            tg.start_soon(ticker)
            tg.start_soon(sampler)
            with anyio.CancelScope() as consuming:

                async def end_consuming() -> None:
                    await stop.wait()
                    consuming.cancel()

                tg.start_soon(end_consuming)
                n = 0
                async for ev in rb:  # no per-event timeout: as lean as a user's loop
                    res.out_of_order += ev.seq <= last
                    last = ev.seq
                    n += 1
                    if n % PAUSE_EVERY == 0:
                        await anyio.sleep(PAUSE)  # see PAUSE
        res.drops_when_producer_stopped = rb.stats().kernel_drops or 0
        with anyio.fail_after(60):  # drain what is left
            while True:
                s = rb.stats()
                if s.delivered + s.kernel_drops + s.queue_drops == gen.produced():
                    break
                ev = await rb.receive()
                res.out_of_order += ev.seq <= last
                last = ev.seq
        s = rb.stats()
    res.produced = gen.produced()
    res.delivered, res.kernel_drops, res.queue_drops = s.delivered, s.kernel_drops, s.queue_drops
    res.consumer_cpu_s = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    return res
