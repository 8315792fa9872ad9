"""aioringbuf as a benchmark consumer (see common.py for the protocol).

Extra arguments: ``iter``, ``batch`` or ``arrays`` (``async for ev in
stream``, ``async for batch in stream.batches()`` or ``async for arr in
stream.arrays()``, numpy columns; ``exec``: ``async for ev in stream``
over the stream type exec_events() returns, opened on the same ring);
``idle`` reads nothing: the
producer-alone baseline, with MODE drain), then the anyio backend
(asyncio, uvloop or trio). AIORINGBUF_PURE=1 in the environment runs the
pure-Python path.
"""

from __future__ import annotations

import os
import sys
import time

import anyio
import common

import aioringbuf
from aioringbuf import U32, U64, CStr, Event, Tail, _fast, _syscall
from aioringbuf._source import open_ring
from aioringbuf.exec import DEFAULT_RING_SIZE, ExecEvents
from aioringbuf.types import BpfObject, StreamOptions

OBJECT = os.environ["BENCH_OBJECT"]


class BenchRec(Event):
    seq: U64
    ts_ns: U64
    cpu: U32
    pid: U32
    arg: U64


class BenchExec(Event):
    """bench.h's struct bench_exec: exec_events()-shaped, argv of 8..32 strings."""

    seq: U64
    ts_ns: U64
    cpu: U32
    pid: U32
    arg: U64
    comm: CStr[16]
    argc: U32
    flags: U32
    argv: Tail[list[str]]


async def consume_iter(stream, mode: str, target: int, lat: list[int]) -> None:
    now = time.monotonic_ns
    if mode == "latency":
        async for ev in stream:
            lat.append(now() - ev.ts_ns)
    elif mode == "drain":
        n = 0
        async for _ in stream:
            n += 1
            if n >= target:
                return
    else:
        async for _ in stream:
            pass


async def consume_batches(stream, mode: str, target: int, lat: list[int]) -> None:
    now = time.monotonic_ns
    if mode == "latency":
        async for batch in stream.batches():
            t = now()
            lat.extend(t - ev.ts_ns for ev in batch)
    elif mode == "drain":
        n = 0
        async for batch in stream.batches():
            n += len(batch)
            if n >= target:
                return
    else:
        async for _ in stream.batches():
            pass


async def consume_arrays(stream, mode: str, target: int, lat: list[int]) -> None:
    now = time.monotonic_ns
    if mode == "latency":
        async for arr in stream.arrays():
            lat.extend((now() - arr["ts_ns"].astype("int64")).tolist())
    elif mode == "drain":
        n = 0
        async for arr in stream.arrays():
            n += len(arr)
            if n >= target:
                return
    else:
        async for _ in stream.arrays():
            pass


CONSUME = {"iter": consume_iter, "exec": consume_iter, "batch": consume_batches,
           "arrays": consume_arrays}


class ExecStream(ExecEvents):
    """exec_events()'s own stream type, on the benchmark's ring instead of exec.bpf.o:
    the same class, cursor and drain as ``async for ev in exec_events()``."""

    def __init__(self, obj: BpfObject) -> None:
        super().__init__(DEFAULT_RING_SIZE, {}, BenchRec, StreamOptions())
        self._bench = obj

    async def _open_source(self):  # type: ignore[no-untyped-def]
        drops = self._bench.map_fd("ring_drops") if "ring_drops" in self._bench.map_names else None
        source = open_ring(self._bench.map_fd("ring"), BenchRec, drops)
        self._attach(source)
        return source


async def main(args: common.Args) -> None:
    style = args.extra[0] if args.extra else "iter"
    kind = args.kind
    sizes = {"ring": args.size} if kind != "perf" else None
    async with aioringbuf.load(OBJECT, map_sizes=sizes) as obj:
        ctl = obj.map_fd("control")
        _syscall.map_update(ctl, common.MODE, common.MODES[kind].to_bytes(8, "little"))
        _syscall.map_update(ctl, common.TARGET, args.pid.to_bytes(8, "little"))
        if kind == "perf":
            stream = obj.perf_buffer("perf", BenchRec, per_cpu_size=args.size)
        elif style == "exec":
            stream = ExecStream(obj)
        elif kind == "ring-exec":
            stream = obj.ring_buffer("ring", BenchExec)
        elif kind == "ring-adaptive":
            stream = obj.ring_buffer("ring", BenchRec, flush_interval=0.005)
        else:
            stream = obj.ring_buffer("ring", BenchRec)

        def produced() -> int:
            return int.from_bytes(_syscall.map_lookup(ctl, common.PRODUCED, 8), "little")

        if style == "arrays":
            aioringbuf.types.dtype_of(BenchRec)  # imports numpy now, not on the clock
        async with stream:
            common.ready()
            if style == "idle":
                clock = common.Clock()
                clock.start()
                await anyio.to_thread.run_sync(common.wait_go)
                clock.stop()
                common.report(0, produced(), clock)
                return
            target = 0
            if args.mode == "drain":
                await anyio.to_thread.run_sync(common.wait_go)
                target = produced()
            lat: list[int] = []
            consume = CONSUME[style]
            clock = common.Clock()
            clock.start()
            last_event = [time.monotonic()]
            async with anyio.create_task_group() as tg:
                if args.mode != "drain":
                    async def watchdog() -> None:
                        idle = common.Idle()
                        while not idle.over(stream.stats().delivered):
                            await anyio.sleep(0.05)
                        last_event[0] = idle.last_change
                        tg.cancel_scope.cancel()
                    tg.start_soon(watchdog)
                await consume(stream, args.mode, target, lat)
                tg.cancel_scope.cancel()
            clock.stop(None if args.mode == "drain" else last_event[0])
            st = stream.stats()
            # ring_drops: the ring's own counter (full at reserve); produced -
            # delivered - ring_drops is what was left unread or undelivered.
            common.report(st.delivered, produced(), clock, lat, impl=_fast.IMPLEMENTATION,
                          style=style, ring_drops=st.kernel_drops, avail_bytes=st.avail_bytes,
                          queue_drops=st.queue_drops, queue_len=st.queue_len,
                          discarded=st.discarded, decode_errors=st.decode_errors)


if __name__ == "__main__":
    parsed = common.parse()
    backend = parsed.extra[1] if len(parsed.extra) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, parsed, backend="trio" if backend == "trio" else "asyncio",
              backend_options=options)
    sys.exit(0)
