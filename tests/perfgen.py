"""Drive bpf/tests/perfgen.bpf.c: exactly N records into a chosen CPU's perf ring.

A BPF_PROG_TEST_RUN of an XDP program runs on the CPU of the calling
thread, and ``bpf_perf_event_output(..., BPF_F_CURRENT_CPU, ...)`` writes
into that CPU's ring: pinning the thread (``os.sched_setaffinity(0, ...)``
pins only the calling thread on Linux) chooses the ring.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import anyio
from ringgen import packet

import aioringbuf
from aioringbuf import U32, U64, Event, Tail, _syscall


class PRec(Event):
    """A perfgen record: ``payload`` has the kernel's padding, ``len`` says what is real."""

    seq: U64
    cpu: U32
    len: U32
    payload: Tail[bytes]

    @property
    def data(self) -> bytes:
        return self.payload[: self.len]


class PHead(Event):
    """A perfgen record with no payload: a fixed 16-byte layout (20 bytes once padded)."""

    seq: U64
    cpu: U32
    len: U32


def record_bytes(payload_len: int) -> int:
    """Perf ring bytes one record takes: header 8 + u32 size + 16 + payload, 8-aligned."""
    return (8 + 4 + 16 + payload_len + 7) & ~7


def capacity(per_cpu_size: int, payload_len: int) -> int:
    """Records that fit in an empty ring: the kernel keeps one byte free (CIRC_SPACE)."""
    return (per_cpu_size - 1) // record_bytes(payload_len)


@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class PerfGenerator:
    """A loaded perfgen object, with its program fd for test runs."""

    def __init__(self, obj: aioringbuf.types.BpfObject) -> None:
        self.obj = obj
        self.prog_fd = obj.program_fd("perfgen")

    def produce(self, n: int, payload: bytes = b"", cpu: int = 0) -> None:
        """Run the program exactly ``n`` times on ``cpu``."""
        pkt = packet(payload)
        with on_cpu(cpu):
            if n <= 16:
                for _ in range(n):
                    _syscall.prog_test_run(self.prog_fd, pkt, repeat=1)
                return
            # This CPU's own counter: another thread may produce on another CPU.
            target = self.produced_on(cpu) + n
            while (left := target - self.produced_on(cpu)) > 0:
                try:
                    _syscall.prog_test_run(self.prog_fd, pkt, repeat=left)
                except InterruptedError:
                    continue

    async def produce_in_thread(self, n: int, chunk: int = 20_000, **kw: object) -> None:
        while n > 0:
            k = min(chunk, n)
            await anyio.to_thread.run_sync(lambda k=k: self.produce(k, **kw))
            n -= k

    def produced(self) -> int:
        raw = _syscall.map_lookup(self.obj.map_fd("counters"), 0, 8)
        return int.from_bytes(raw, "little")

    def produced_on(self, cpu: int) -> int:
        fd = self.obj.map_fd("cpu_produced")
        raw = _syscall.map_lookup(fd, 0, 8 * _syscall.possible_cpus())
        return int.from_bytes(raw[8 * cpu : 8 * cpu + 8], "little")

    def bpf_drops(self) -> int:
        """Failed outputs the BPF side counted (not full rings: the kernel counts those)."""
        return _syscall.percpu_u64_sum(self.obj.map_fd("events_drops"))

    def close(self) -> None:
        os.close(self.prog_fd)
