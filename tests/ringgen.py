"""Drive bpf/tests/ringgen.bpf.c: make the kernel produce exactly N records.

Each BPF_PROG_TEST_RUN of the program tries to write one record numbered by
a kernel-side counter (``counters[0]``), so ``produced()`` is the exact
number of records the BPF side attempted, the left side of
``delivered + kernel_drops + queue_drops == produced``.
"""

from __future__ import annotations

import os
import struct

import anyio

import aioringbuf
from aioringbuf import U64, Event, Tail, _syscall

RESERVE = 1 << 0
DISCARD_ODD = 1 << 1
NO_WAKEUP = 1 << 2
FORCE_WAKEUP = 1 << 3


class Rec(Event):
    """An OUTPUT record: the sequence number, then the packet's payload."""

    seq: U64
    payload: Tail[bytes]


class Fixed(Event):
    """A RESERVE record."""

    seq: U64
    aux: U64


def packet(payload: bytes = b"", flags: int = 0, aux: int = 0) -> bytes:
    return struct.pack("<IIQ", flags, 0, aux) + payload


def span(payload_len: int) -> int:
    """Ring bytes taken by one OUTPUT record with that payload."""
    return (8 + payload_len + 8 + 7) & ~7


def capacity(ring_size: int, payload_len: int) -> int:
    """Records that fit: the kernel refuses once outstanding bytes exceed size - 1."""
    return (ring_size - 1) // span(payload_len)


class Generator:
    """A loaded ringgen object, with its program fd for test runs."""

    def __init__(self, obj: aioringbuf.types.BpfObject) -> None:
        self.obj = obj
        self.prog_fd = obj.program_fd("ringgen")

    def produce(self, n: int, payload: bytes = b"", flags: int = 0, aux: int = 0) -> None:
        """Run the program exactly ``n`` times (each run attempts one record)."""
        pkt = packet(payload, flags, aux)
        if n <= 16:
            # repeat > 1 costs the kernel a fixed ~16 ms here: loop instead.
            for _ in range(n):
                _syscall.prog_test_run(self.prog_fd, pkt, repeat=1)
            return
        target = self.produced() + n
        while (left := target - self.produced()) > 0:
            try:
                _syscall.prog_test_run(self.prog_fd, pkt, repeat=left)
            except InterruptedError:
                continue  # a signal stopped the run part way: the counter says where

    async def produce_in_thread(self, n: int, chunk: int = 50_000, **kw: object) -> None:
        """Produce from a worker thread, so the event loop consumes meanwhile."""
        while n > 0:
            k = min(chunk, n)
            await anyio.to_thread.run_sync(lambda k=k: self.produce(k, **kw))
            n -= k

    def produced(self) -> int:
        raw = _syscall.map_lookup(self.obj.map_fd("counters"), 0, 8)
        return int.from_bytes(raw, "little")

    def close(self) -> None:
        os.close(self.prog_fd)
