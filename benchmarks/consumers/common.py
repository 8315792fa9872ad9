"""The protocol every benchmark consumer follows (stdlib only: BCC's consumer
runs on Debian's /usr/bin/python3, which has neither aioringbuf nor anyio).

A consumer process is started as ``CONSUMER KIND MODE PRODUCER_PID CPU SIZE
[extra...]`` (KIND: ring, ring-adaptive, ring-exec or perf; MODE: live, drain or
latency; SIZE: ring bytes, or perf bytes per CPU). It pins itself to CPU,
loads bench.bpf.o (or BCC's copy), aims it at the producer, prints
``ready`` and then:

* live / latency: consumes until no record came for IDLE seconds after the
  first one;
* drain: waits for a line on stdin (the harness sends it once the producer
  has filled the ring), then consumes every record produced so far, and
  only that part is timed. BENCH_RECORDS in the environment says how many
  the producer was asked for (the reference row, which reads no ring,
  makes that many).

It prints one JSON line: delivered, produced, user_s and sys_s (its own CPU
time over the timed part, from getrusage), wall_s, lat_ns (p50, p99, p99.9
of BPF timestamp -> consumer, for latency runs) and which Python it ran on.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE = 0.5  # seconds without a record that end a live or latency run
MODES = {"ring": 0, "ring-adaptive": 1, "perf": 2, "ring-exec": 3}  # bench.h's enum bench_mode
TARGET, MODE, PRODUCED = 0, 1, 2  # bench.h's enum bench_control
RECORD_FORMAT = "<QQIIQ"  # struct bench_rec: seq, ts_ns, cpu, pid, arg


@dataclass
class Args:
    kind: str
    mode: str
    pid: int
    cpu: int
    size: int
    extra: list[str]


def parse() -> Args:
    kind, mode, pid, cpu, size, *extra = sys.argv[1:]
    if kind not in MODES or mode not in ("live", "drain", "latency"):
        raise SystemExit(f"usage: {sys.argv[0]} ring|ring-adaptive|ring-exec|perf "
                         "live|drain|latency "
                         "PRODUCER_PID CPU SIZE [extra]")
    args = Args(kind, mode, int(pid), int(cpu), int(size), extra)
    os.sched_setaffinity(0, {args.cpu})
    return args


def ready() -> None:
    print("ready", flush=True)


def wait_go() -> None:
    sys.stdin.readline()


class Clock:
    """CPU (getrusage) and wall time over the timed part of a run."""

    def start(self) -> None:
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.monotonic()

    def stop(self, wall_end: float | None = None) -> None:
        self.ru1 = resource.getrusage(resource.RUSAGE_SELF)
        self.t1 = wall_end if wall_end is not None else time.monotonic()


def percentiles(lat: list[int] | None) -> list[int]:
    if not lat:
        return [-1, -1, -1]
    s = sorted(lat)
    return [s[int(p * (len(s) - 1) + 0.5)] for p in (0.5, 0.99, 0.999)]


def report(delivered: int, produced: int, clock: Clock, lat: list[int] | None = None,
           **extra: object) -> None:
    print(json.dumps({
        "delivered": delivered,
        "produced": produced,
        "user_s": clock.ru1.ru_utime - clock.ru0.ru_utime,
        "sys_s": clock.ru1.ru_stime - clock.ru0.ru_stime,
        "wall_s": clock.t1 - clock.t0,
        "lat_ns": percentiles(lat),
        "python": f"{sys.executable} ({sys.version.split()[0]})",
        **extra,
    }), flush=True)


class Idle:
    """Decides when a live run is over: no new record for IDLE seconds after the first."""

    def __init__(self) -> None:
        self.last_count = 0
        self.last_change = time.monotonic()

    def over(self, count: int) -> bool:
        now = time.monotonic()
        if count != self.last_count or count == 0:
            self.last_count = count
            self.last_change = now
            return False
        return now - self.last_change > IDLE


def run_polling(mode: str, poll: Callable[[int], object], count: list[int],
                produced: Callable[[], int], lat: list[int]) -> None:
    """The timed part of a callback consumer (BCC, pylibbpf): poll until done, report.

    ``poll(timeout_ms)`` runs the callbacks, which add to ``count[0]``.
    """
    ready()
    target = 0
    if mode == "drain":
        wait_go()
        target = produced()
    clock = Clock()
    clock.start()
    idle = Idle()
    while True:
        poll(100)
        if mode == "drain":
            if count[0] >= target:
                break
        elif idle.over(count[0]):
            break
    clock.stop(None if mode == "drain" else idle.last_change)
    report(count[0], produced(), clock, lat)
