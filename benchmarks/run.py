"""aioringbuf against perf buffers and its peers: ``sudo python benchmarks/run.py``.

Builds what it needs (the BPF object, the C producer and libbpf peers, the
C extension in place), installs the benchmark-only packages
(benchmarks/setup.sh, skip with --no-setup), runs every consumer on the
same BPF program and 32-byte record, prints the tables, and writes
benchmarks/results/results-<time>.json, latest.json and benchmarks.png.

One process per consumer, pinned to CPU 0; the producer (benchmarks/c/
producer.c: getpgid(0) in a loop, traced by bench.bpf.c filtered to its
pid) pinned to CPU 1. Scenarios:

* drain: the producer fills the ring first (nobody reading), then only
  the read-out is timed: the consumer's own cost per event;
* live: the producer as fast as it can for a few seconds: events/s
  delivered, kernel drops, consumer CPU per event, producer rate;
* latency: fixed rates (1k, 10k, 100k records/s): BPF timestamp to the
  consumer's hands, p50 / p99 / p99.9;
* wakeups: the producer's rate alone, then with aioringbuf consuming
  with the kernel's default wakeups and with adaptive ones.

Every cell runs several times in interleaved rounds (each round runs every
row once), the tables show each row's median run, and ratios between rows
(x BCC, x pylibbpf, % of the producer alone) are taken within a round, so
that a slow spell of a shared machine weighs on both sides of a ratio. The
last table checks the issue's targets against the run.

Needs root, two CPUs, and a quiet machine for numbers worth comparing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
RESULTS = HERE / "results"
OBJECT = BUILD / "bench.bpf.o"
SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-bpfcc lives
CONSUMER_CPU, PRODUCER_CPU = 0, 1
RING_SIZE = 32 << 20  # holds 838k records of 40 bytes (8-byte header + 32)
PERF_SIZE = 32 << 20  # per CPU: 699k samples of 48 bytes
EXEC_RING_SIZE = 128 << 20  # exec-shaped drain: 500k records of 128..320 bytes (224 average)


# -- building -----------------------------------------------------------------


def sh(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def build() -> None:
    BUILD.mkdir(exist_ok=True)
    sh(["make", "-s", "-C", str(ROOT / "bpf")])  # vmlinux.h, and the package's own objects
    sh(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror",
        f"-I{ROOT / 'bpf/build'}", f"-I{ROOT / 'aioringbuf/include'}", f"-I{HERE / 'bpf'}",
        "-c", str(HERE / "bpf/bench.bpf.c"), "-o", str(OBJECT)])
    sh(["llvm-strip", "-g", str(OBJECT)])
    sh(["gcc", "-O2", "-Wall", "-o", str(BUILD / "producer"), str(HERE / "c/producer.c")])
    sh(["gcc", "-O2", "-Wall", "-o", str(BUILD / "libbpf_consumer"),
        str(HERE / "c/libbpf_consumer.c"), "-lbpf"])
    # The C extension, in place, for the aioringbuf rows (they say which path ran).
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


# -- consumers ----------------------------------------------------------------


@dataclass(frozen=True)
class Consumer:
    name: str
    kind: str  # ring, ring-exec or perf (ring-adaptive only in the wakeup scenario)
    argv: tuple[str, ...]  # before KIND MODE PID CPU SIZE
    extra: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    python: str | None = None  # None: not Python
    streams: bool = True  # False: a reference row, drain only

    def command(self, kind: str, mode: str, pid: int, size: int) -> list[str]:
        if self.python is None:  # the libbpf peer: OBJ ring|ring-adaptive|perf MODE PID CPU SIZE
            return [*self.argv, kind, mode, str(pid), str(CONSUMER_CPU), str(size)]
        return [*self.argv, kind, mode, str(pid), str(CONSUMER_CPU), str(size), *self.extra]


def consumers() -> list[Consumer]:
    py = sys.executable
    aiorb = (py, str(HERE / "consumers/aiorb_consumer.py"))
    bcc = (SYSTEM_PYTHON, str(HERE / "consumers/bcc_consumer.py"))
    libbpf = (str(BUILD / "libbpf_consumer"), str(OBJECT))
    return [
        Consumer("aioringbuf RingBuffer async for", "ring", aiorb, ("iter",), python=py),
        Consumer("aioringbuf RingBuffer batches()", "ring", aiorb, ("batch",), python=py),
        Consumer("aioringbuf exec_events() stream async for", "ring", aiorb, ("exec",),
                 python=py),
        Consumer("aioringbuf RingBuffer async for, pure Python", "ring", aiorb, ("iter",),
                 (("AIORINGBUF_PURE", "1"),), python=py),
        Consumer("aioringbuf RingBuffer arrays()", "ring", aiorb, ("arrays",), python=py),
        Consumer("naive pure Python: mmap + struct.unpack_from", "ring",
                 (py, str(HERE / "consumers/naive_consumer.py")), python=py),
        Consumer("aioringbuf PerfBuffer async for", "perf", aiorb, ("iter",), python=py),
        Consumer("aioringbuf PerfBuffer batches()", "perf", aiorb, ("batch",), python=py),
        Consumer("aioringbuf PerfBuffer arrays()", "perf", aiorb, ("arrays",), python=py),
        Consumer("libbpf C ring_buffer__poll", "ring", libbpf),
        # exec_events()-shaped records (120..312 bytes, argv as Tail[list[str]]): drain only
        Consumer("aioringbuf RingBuffer async for, exec-shaped", "ring-exec", aiorb, ("iter",),
                 python=py, streams=False),
        Consumer("aioringbuf RingBuffer batches(), exec-shaped", "ring-exec", aiorb, ("batch",),
                 python=py, streams=False),
        Consumer("libbpf C ring_buffer__poll, exec-shaped", "ring-exec", libbpf,
                 streams=False),
        Consumer("libbpf C perf_buffer__poll", "perf", libbpf),
        Consumer("BCC ring_buffer_poll", "ring", bcc, python=SYSTEM_PYTHON),
        Consumer("BCC perf_buffer_poll", "perf", bcc, python=SYSTEM_PYTHON),
        Consumer("pylibbpf PerfEventArray", "perf",
                 (py, str(HERE / "consumers/pylibbpf_consumer.py")), python=py),
        Consumer("reference: msgspec msgpack -> Structs, no ring", "ring",
                 (py, str(HERE / "consumers/reference_consumer.py")), python=py,
                 streams=False),
    ]


def bcc_problem() -> str | None:
    """Why the BCC peers cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import bcc"], capture_output=True, text=True)
    if probe.returncode:
        return "python3-bpfcc is not installed (benchmarks/setup.sh installs it)"
    if not Path(f"/lib/modules/{os.uname().release}/build").exists():
        return (f"no kernel headers at /lib/modules/{os.uname().release}/build "
                "(benchmarks/setup.sh links Debian's nearest linux-headers-*-amd64)")
    return None


# -- one run --------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    consumer: str
    python: str = ""
    delivered: int = 0
    produced: int = 0
    kernel_drops: int = 0
    events_per_s: float = 0.0
    cpu_us_per_event: float = 0.0
    producer_rate: float = 0.0
    lat_us: list[float] = field(default_factory=list)  # p50, p99, p99.9
    skipped: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def read_line(proc: subprocess.Popen[str], what: str, timeout: float) -> str:
    """The next stdout line of ``proc``; raise with its stderr if it ends first."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), True)
    import select

    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line:
                return line.strip()
            break
        if proc.poll() is not None:
            break
    err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    proc.kill()
    tail = " | ".join(err.strip().splitlines()[-3:]) if err else "no output"
    raise RuntimeError(f"{what}: {tail}")


def send(proc: subprocess.Popen[str], text: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)


# What a consumer may report besides the counts: its hot path and style, and
# the stream's own buckets at the end (aiorb_consumer.py).
_EXTRA_KEYS = ("impl", "style", "ring_drops", "avail_bytes", "queue_drops", "queue_len",
               "discarded", "decode_errors")


def run_one(scenario: str, c: Consumer, kind: str, mode: str, producer_args: list[str],
            size: int, timeout: float = 180) -> Row:
    row = Row(scenario, c.name, python=c.python or "(C)")
    producer = start([str(BUILD / "producer"), str(PRODUCER_CPU), *producer_args])
    consumer = None
    try:
        pid = int(read_line(producer, "producer", 10).split()[1])
        env = dict(os.environ, BENCH_OBJECT=str(OBJECT),
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE / "consumers")]))
        env.update(dict(c.env))
        if mode == "drain" and producer_args[0] == "count":
            env["BENCH_RECORDS"] = producer_args[1]  # for the reference row
        consumer = start(c.command(kind, mode, pid, size), env)
        if read_line(consumer, c.name, 120) != "ready":
            raise RuntimeError(f"{c.name}: did not say ready")
        send(producer)
        prod = json.loads(read_line(producer, "producer", timeout))
        if mode == "drain":
            send(consumer)
        out = json.loads(read_line(consumer, c.name, timeout))
    except (RuntimeError, ValueError) as exc:
        row.skipped = str(exc)[:300]
        return row
    finally:
        for p in (producer, consumer):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait()
    cpu = out["user_s"] + out["sys_s"]
    row.python = out["python"] or "(C)"
    row.delivered, row.produced = out["delivered"], out["produced"]
    row.kernel_drops = row.produced - row.delivered
    row.cpu_us_per_event = cpu / row.delivered * 1e6 if row.delivered else 0.0
    row.producer_rate = prod["calls"] / prod["seconds"] if prod["seconds"] else 0.0
    if mode == "drain":
        row.events_per_s = row.delivered / out["wall_s"] if out["wall_s"] else 0.0
    else:
        row.events_per_s = row.delivered / prod["seconds"] if prod["seconds"] else 0.0
    row.lat_us = [x / 1000 for x in out["lat_ns"]]
    row.extra = {k: v for k, v in out.items() if k in _EXTRA_KEYS}
    if row.extra.get("impl") == "python" and "pure" not in c.name:
        row.extra["note"] = "C extension not built: pure-Python path"
    return row


# -- scenarios ----------------------------------------------------------------


REPEAT = 3  # runs per cell; tables show the run with the median of the cell's key


@dataclass(frozen=True)
class Cell:
    """One table row to measure: a consumer in one scenario."""

    scenario: str
    consumer: Consumer
    kind: str
    mode: str
    producer_args: tuple[str, ...]
    size: int
    label: str = ""  # the row's name, when not the consumer's


def median_run(runs: list[Row], key: str) -> Row:
    """The run whose ``key`` is the median of ``runs`` (a real run, so its
    columns stay consistent), with every run's value of ``key`` in extra:
    sorted (``<key>_all``) and in round order (``<key>_by_round``, None
    where a run failed) for ratios between rows of the same round."""
    value = (lambda r: r.lat_us[1]) if key == "p99" else (lambda r: getattr(r, key))
    by_round = [None if r.skipped else round(value(r), 4) for r in runs]
    ok = sorted((r for r in runs if not r.skipped), key=value)
    if not ok:
        return runs[-1]
    row = ok[(len(ok) - 1) // 2]
    row.extra["runs"] = len(ok)
    row.extra[f"{key}_all"] = [round(value(r), 4) for r in ok]
    row.extra[f"{key}_by_round"] = by_round
    return row


class Progress:
    """Which row and round is running, and about how long the rest takes.

    ``planned`` is the number of runs the whole benchmark will make (main()
    adds each scenario's before it starts); the estimate is the mean time
    of the runs so far times the runs left. Printed to stderr, one line per
    run, so the tables on stdout stay clean.
    """

    def __init__(self) -> None:
        self.planned = 0
        self.done = 0
        self.start = time.monotonic()

    def begin(self, cell: Cell, rnd: int, times: int, row: int, rows: int) -> None:
        elapsed = time.monotonic() - self.start
        left = (elapsed / self.done * (self.planned - self.done)) if self.done else None
        eta = f"about {fmt_duration(left)} left" if left is not None else "estimating"
        name = cell.label or cell.consumer.name
        print(f"[{self.done + 1}/{self.planned}] {cell.scenario}: round {rnd}/{times}, "
              f"row {row}/{rows} {name}; {fmt_duration(elapsed)} elapsed, {eta}",
              file=sys.stderr, flush=True)

    def end(self) -> None:
        self.done += 1


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


PROGRESS = Progress()


def in_rounds(cells: list[Cell], key: str, times: int) -> list[Row]:
    """Run every cell ``times`` times, interleaved: round 1 runs each cell
    once, then round 2, ... A slow minute of this shared machine then falls
    on all rows of a round alike, and ratios between rows are taken within
    a round (see targets())."""
    runs: list[list[Row]] = [[] for _ in cells]
    for rnd in range(1, times + 1):
        for i, (cell, out) in enumerate(zip(cells, runs, strict=True), 1):
            PROGRESS.begin(cell, rnd, times, i, len(cells))
            row = run_one(cell.scenario, cell.consumer, cell.kind, cell.mode,
                          list(cell.producer_args), cell.size)
            PROGRESS.end()
            if cell.label:
                row.consumer = cell.label
            out.append(row)
    rows = [median_run(out, key) for out in runs]
    for row, out in zip(rows, runs, strict=True):
        row.extra["kernel_drops_max"] = max((r.kernel_drops for r in out if not r.skipped),
                                            default=0)
    return rows


def size_for(c: Consumer) -> int:
    if c.kind == "ring-exec":
        return EXEC_RING_SIZE
    return PERF_SIZE if c.kind == "perf" else RING_SIZE


def drain(cs: list[Consumer], n: int, times: int) -> list[Row]:
    return in_rounds([Cell("drain", c, c.kind, "drain", ("count", str(n)), size_for(c))
                      for c in cs], "cpu_us_per_event", times)


def live(cs: list[Consumer], seconds: float, times: int) -> list[Row]:
    return in_rounds([Cell("live", c, c.kind, "live", ("spin", str(seconds)), size_for(c))
                      for c in cs if c.streams], "events_per_s", times)


def latency(cs: list[Consumer], rates: list[int], seconds: float, times: int) -> list[Row]:
    return [row for rate in rates
            for row in in_rounds([Cell(f"latency {rate // 1000}k/s", c, c.kind, "latency",
                                       ("rate", str(rate), str(seconds)), size_for(c))
                                  for c in cs if c.streams], "p99", times)]


_ADAPTIVE = "adaptive wakeups, flush_interval=5ms"
WAKEUP_PLAN = [  # (consumer, ring kind, label) beside the producer's two rows alone
    ("aioringbuf RingBuffer async for", "ring", "default wakeups"),
    ("aioringbuf RingBuffer async for", "ring-adaptive", _ADAPTIVE),
    ("aioringbuf RingBuffer batches()", "ring-adaptive", _ADAPTIVE),
    ("aioringbuf RingBuffer arrays()", "ring-adaptive", _ADAPTIVE),
    ("libbpf C ring_buffer__poll", "ring", "default wakeups"),
    ("libbpf C ring_buffer__poll", "ring-adaptive", "adaptive wakeups, 5 ms poll timeout"),
]


def wakeups(cs: list[Consumer], seconds: float, times: int) -> list[Row]:
    """The producer alone, then with consumers (default and adaptive wakeups),
    in rounds: each round's consumers are compared with that round's alone."""
    py = sys.executable
    aiorb = (py, str(HERE / "consumers/aiorb_consumer.py"))
    alone = Consumer("producer alone (program attached, nobody reading)", "ring", aiorb,
                     ("idle",), python=py)
    spin = ("spin", str(seconds))
    # A ring that holds the whole run: the producer never meets a full ring.
    cells = [Cell("wakeups", alone, "ring", "drain", spin, 512 << 20),
             Cell("wakeups", alone, "ring-adaptive", "drain", spin, 512 << 20,
                  "producer alone, adaptive submit (what its helper calls cost)")]
    by_name = {c.name: c for c in cs}
    cells += [Cell("wakeups", by_name[name], kind, "live", spin, RING_SIZE, f"{name} ({label})")
              for name, kind, label in WAKEUP_PLAN if name in by_name]
    rows = in_rounds(cells, "producer_rate", times)
    rows[0].kernel_drops = rows[1].kernel_drops = 0  # nobody read: not drops
    alone_by_round = rows[0].extra["producer_rate_by_round"]
    for row in rows:
        paired = paired_ratios(row.extra["producer_rate_by_round"], alone_by_round)
        row.extra["producer_vs_alone"] = statistics.median(paired) if paired else 0.0
        row.extra["producer_vs_alone_by_round"] = paired
    return rows


def paired_ratios(nums: Any, dens: Any) -> list[float]:
    """num / den for each round where both ran (two ``<key>_by_round`` lists)."""
    return [n / d for n, d in zip(nums, dens, strict=True) if n is not None and d]


# -- the targets --------------------------------------------------------


def targets(rows: list[Row]) -> list[dict[str, object]]:
    """The issue's targets, checked against this run: for ratios, the median
    (and range) of the ratios taken within each round."""
    def find(scenario: str, consumer: str) -> Row | None:
        return next((r for r in rows if r.scenario == scenario and r.consumer == consumer
                     and not r.skipped), None)

    out: list[dict[str, object]] = []

    def add(target: str, row_name: str, values: list[float], ok: object, unit: str) -> None:
        if not values:
            return
        med = statistics.median(values)
        out.append({"target": target, "row": row_name, "median": med, "min": min(values),
                    "max": max(values), "rounds": len(values), "met": bool(ok(med)),  # type: ignore[operator]
                    "unit": unit})

    for name, limit in [("aioringbuf RingBuffer async for", 0.5),
                        ("aioringbuf RingBuffer batches()", 0.15)]:
        r = find("drain", name)
        if r is not None:
            add(f"drain CPU/event <= {limit} us", name, r.extra["cpu_us_per_event_all"],  # type: ignore[arg-type]
                lambda m, x=limit: m <= x, "us")
    arrays = find("drain", "aioringbuf RingBuffer arrays()")
    if arrays is not None:
        add("drain CPU/event <= 0.03 us", arrays.consumer,
            arrays.extra["cpu_us_per_event_all"], lambda m: m <= 0.03, "us")  # type: ignore[arg-type]
        c = find("drain", "libbpf C ring_buffer__poll")
        if c is not None:
            vals = paired_ratios(arrays.extra["cpu_us_per_event_by_round"],
                                 c.extra["cpu_us_per_event_by_round"])
            add("drain CPU/event within 5x of libbpf C ring_buffer__poll", arrays.consumer,
                vals, lambda m: m <= 5, "x")
    for r in rows:
        if r.scenario == "wakeups" and r.consumer.startswith("aioringbuf RingBuffer arrays()") \
                and not r.skipped:
            vals = r.extra.get("producer_vs_alone_by_round") or []
            add("arrays() live: producer keeps >= 85% of its rate alone", r.consumer,
                [100 * v for v in vals], lambda m: m >= 85, "%")  # type: ignore[union-attr]
            add("arrays() live: zero kernel drops", r.consumer,
                [float(r.extra.get("kernel_drops_max", r.kernel_drops))],  # type: ignore[arg-type]
                lambda m: m == 0, "drops")
    ring, shaped = find("drain", "aioringbuf RingBuffer async for"), find(
        "drain", "aioringbuf exec_events() stream async for")
    if ring is not None and shaped is not None:
        vals = paired_ratios(shaped.extra["cpu_us_per_event_by_round"],
                             ring.extra["cpu_us_per_event_by_round"])
        add("exec_events() async for CPU/event <= 1.10x RingBuffer's", shaped.consumer,
            vals, lambda m: m <= 1.10, "x")
    for peer, factor in [("BCC ring_buffer_poll", 5), ("pylibbpf PerfEventArray", 2)]:
        p = find("drain", peer)
        for name in ("aioringbuf RingBuffer async for", "aioringbuf RingBuffer batches()"):
            r = find("drain", name)
            if p is None or r is None:
                continue
            # The speed ratio as the inverse ratio of CPU per event: a drain
            # runs on one pinned CPU, where its wall time tracks its CPU time.
            vals = paired_ratios(p.extra["cpu_us_per_event_by_round"],
                                 r.extra["cpu_us_per_event_by_round"])
            add(f"drain speed >= {factor}x {peer} (by CPU/event)", name, vals,
                lambda m, f=factor: m >= f, "x")
    naive = find("drain", "naive pure Python: mmap + struct.unpack_from")
    pure = find("drain", "aioringbuf RingBuffer async for, pure Python")
    if naive is not None and pure is not None:
        # Issue 13: the pure-Python path no slower than the obvious consumer.
        vals = paired_ratios(naive.extra["cpu_us_per_event_by_round"],
                             pure.extra["cpu_us_per_event_by_round"])
        add("pure-Python async for as fast as the naive consumer (by CPU/event)", pure.consumer,
            vals, lambda m: m >= 1.0, "x")
    for r in rows:
        if r.scenario == "wakeups" and "adaptive wakeups" in r.consumer and not r.skipped:
            vals = r.extra.get("producer_vs_alone_by_round") or []
            add("producer keeps >= 80% of its rate alone", r.consumer,
                [100 * v for v in vals], lambda m: m >= 80, "%")  # type: ignore[union-attr]
    for r in rows:
        if r.scenario == "latency 10k/s" and r.consumer.startswith("aioringbuf") and not r.skipped:
            add("p99 latency < 1000 us at 10k/s", r.consumer, r.extra["p99_all"],  # type: ignore[arg-type]
                lambda m: m < 1000, "us")
    streaming = [r for r in rows if r.scenario.startswith(("latency", "wakeups"))
                 and r.consumer.startswith("aioringbuf") and not r.skipped]
    if streaming:
        drops = [float(r.extra.get("kernel_drops_max", r.kernel_drops)) for r in streaming]  # type: ignore[arg-type]
        add("zero drops below the drain rate (latency and wakeup rows)",
            f"{len(streaming)} aioringbuf rows", drops, lambda m: max(drops) == 0, "drops")
    return out


def targets_table(found: list[dict[str, object]]) -> str:
    lines = ["Targets (median over rounds; ratios taken within each round)"]
    body = [[str(t["target"]), str(t["row"]),
             f"{t['median']:.3g} {t['unit']}", f"{t['min']:.3g}..{t['max']:.3g} ({t['rounds']})",
             "yes" if t["met"] else "NO"] for t in found]
    head = ["target", "row", "median", "range (rounds)", "met"]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        lines.append("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)))
    return "\n".join(lines)


# -- output -------------------------------------------------------------------


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def table(title: str, rows: list[Row], cols: list[tuple[str, object]]) -> str:
    lines = [title]
    body = []
    for r in rows:
        if r.skipped:
            body.append([r.consumer, f"skipped: {r.skipped}"] + [""] * (len(cols) - 1))
            continue
        body.append([r.consumer] + [f(r) for _, f in cols])  # type: ignore[operator]
    head = ["consumer"] + [h for h, _ in cols]
    widths = [max(len(str(x[i])) for x in [head, *body] if i < len(x)) for i in range(len(head))]
    widths[1] = min(widths[1], 60) if len(widths) > 1 else 0
    for line in [head, ["-" * w for w in widths], *body]:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)))
    return "\n".join(lines)


def drops_cell(r: Row) -> str:
    return f"{r.kernel_drops} ({r.kernel_drops / (r.produced or 1):.1%})"


def tables(rows: list[Row]) -> str:
    out = []
    pick = [r for r in rows if r.scenario == "drain"]
    if pick:
        out.append(table("Drain: ring filled first, only the read-out timed", pick, [
            ("events/s", lambda r: fmt_rate(r.events_per_s)),
            ("CPU us/event", lambda r: f"{r.cpu_us_per_event:.3f}"),
            spread("cpu_us_per_event", ".3f"),
            ("delivered", lambda r: str(r.delivered)),
            ("python", lambda r: r.python),
        ]))
    pick = [r for r in rows if r.scenario == "live"]
    if pick:
        out.append(table("Live: producer (getpgid loop, CPU 1) as fast as it can", pick, [
            ("events/s", lambda r: fmt_rate(r.events_per_s)),
            spread("events_per_s", ".2f"),
            ("kernel drops", drops_cell),
            ("CPU us/event", lambda r: f"{r.cpu_us_per_event:.3f}"),
            ("producer/s", lambda r: fmt_rate(r.producer_rate)),
            ("python", lambda r: r.python),
        ]))
    for scen in sorted({r.scenario for r in rows if r.scenario.startswith("latency")},
                       key=lambda s: int(s.split()[1][:-3])):
        pick = [r for r in rows if r.scenario == scen]
        out.append(table(f"Latency, BPF timestamp -> consumer, at {scen.split()[1]}", pick, [
            ("p50 us", lambda r: f"{r.lat_us[0]:.0f}"),
            ("p99 us", lambda r: f"{r.lat_us[1]:.0f}"),
            spread("p99", ".0f"),
            ("p99.9 us", lambda r: f"{r.lat_us[2]:.0f}"),
            ("drops", lambda r: str(r.kernel_drops)),
            ("CPU us/event", lambda r: f"{r.cpu_us_per_event:.2f}"),
        ]))
    pick = [r for r in rows if r.scenario == "wakeups"]
    if pick:
        out.append(table("Wakeups: the producer's rate with and without a consumer", pick, [
            ("producer/s", lambda r: fmt_rate(r.producer_rate)),
            spread("producer_rate", ".2f"),
            ("vs alone", lambda r: f"{r.extra.get('producer_vs_alone', 0):.0%}"),
            ("kernel drops", lambda r: str(r.kernel_drops)),
            ("CPU us/event", lambda r: f"{r.cpu_us_per_event:.3f}" if r.delivered else "-"),
        ]))
    return "\n\n".join(out)


def chart(rows: list[Row], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'aioringbuf[bench]')"
    fig, axes = plt.subplots(2, 2, figsize=(18, 12))
    axes = axes.ravel()
    ok = [r for r in rows if not r.skipped]
    for ax, scen, key, label, log in [
        (axes[0], "drain", "cpu_us_per_event", "drain: consumer CPU us/event (lower is better)",
         True),
        (axes[1], "live", "events_per_s", "live: events/s delivered (higher is better)", False),
    ]:
        pick = [r for r in ok if r.scenario == scen]
        values = [getattr(r, key) for r in pick]
        ax.barh([r.consumer for r in pick], values, color="#4878a8",
                xerr=error_bars(pick, key, values), capsize=3, ecolor="#222222")
        ax.set_title(label)
        if log:
            ax.set_xscale("log")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    lat = [r for r in ok if r.scenario.startswith("latency")]
    names = list(dict.fromkeys(r.consumer for r in lat))
    rates = sorted({r.scenario for r in lat}, key=lambda s: int(s.split()[1][:-3]))
    for name in names:
        mine = [next((r for r in lat if r.consumer == name and r.scenario == s), None)
                for s in rates]
        xs = [s.split()[1] for s, r in zip(rates, mine, strict=True) if r]
        mine = [r for r in mine if r]
        ys = [r.lat_us[1] for r in mine]
        axes[2].errorbar(xs, ys, yerr=error_bars(mine, "p99", ys), marker="o", capsize=3,
                         label=name)
    axes[2].set_yscale("log")
    axes[2].set_title("p99 latency, us (lower is better)")
    if names:
        axes[2].legend(fontsize=7)
    wake = [r for r in ok if r.scenario == "wakeups"]
    pct = [100 * float(r.extra.get("producer_vs_alone", 0)) for r in wake]  # type: ignore[arg-type]
    axes[3].barh([r.consumer for r in wake], pct, color="#6a9f58", capsize=3, ecolor="#222222",
                 xerr=error_bars(wake, "producer_vs_alone", pct, scale=100))
    axes[3].axvline(80, color="grey", linestyle="--", linewidth=1)
    axes[3].set_title("wakeups: producer rate, % of its rate alone (higher is better)")
    axes[3].invert_yaxis()
    axes[3].tick_params(axis="y", labelsize=8)
    fig.suptitle("bars and points: each row's median run; whiskers: the range of its runs "
                 "(rounds for the wakeup ratios)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def error_bars(rows: list[Row], key: str, values: list[float],
               scale: float = 1) -> list[list[float]]:
    """matplotlib's [below, above] for each row: its runs' range around ``values``
    (``<key>_all`` from median_run; the per-round ratios for producer_vs_alone)."""
    below, above = [], []
    for r, v in zip(rows, values, strict=True):
        runs = r.extra.get(f"{key}_by_round" if key == "producer_vs_alone" else f"{key}_all")
        runs = [scale * x for x in (runs or []) if x is not None]  # type: ignore[union-attr]
        below.append(max(0.0, v - min(runs)) if runs else 0.0)
        above.append(max(0.0, max(runs) - v) if runs else 0.0)
    return [below, above]


def spread(key: str, fmt: str) -> tuple[str, object]:
    """A column with the min..max of ``key`` over a cell's runs."""
    def cell(r: Row) -> str:
        vals = r.extra.get(f"{key}_all") or []
        if len(vals) < 2:  # type: ignore[arg-type]
            return "-"
        scale = 1e-6 if key in ("events_per_s", "producer_rate") else 1
        lo, hi = min(vals) * scale, max(vals) * scale  # type: ignore[type-var, operator]
        return f"{lo:{fmt}}..{hi:{fmt}} ({len(vals)})"  # type: ignore[arg-type]
    unit = {"events_per_s": "M/s", "producer_rate": "M/s", "p99": "us"}.get(key, "us")
    return (f"range {unit} (runs)", cell)


def machine() -> dict[str, object]:
    model = ""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return {"kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(), "python": sys.version.split()[0],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-setup", action="store_true", help="skip benchmarks/setup.sh")
    ap.add_argument("--quick", action="store_true", help="shorter runs (for development)")
    ap.add_argument("--only", help="run only consumers whose name contains this")
    ap.add_argument("--scenarios", default="drain,live,latency,wakeups")
    ap.add_argument("--repeat", type=int, default=REPEAT,
                    help="runs per cell, median shown (drain: 2n-1 runs); --quick: 1")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run.py: needs root (BPF)", file=sys.stderr)
        return 1
    if len(os.sched_getaffinity(0)) < 2:
        print("run.py: needs two CPUs (consumer on 0, producer on 1)", file=sys.stderr)
        return 1
    if not args.no_setup:
        sh(["bash", str(HERE / "setup.sh")], env=dict(os.environ, PYTHON=sys.executable))
    build()
    load0 = os.getloadavg()
    cs = consumers()
    if args.only:
        cs = [c for c in cs if args.only.lower() in c.name.lower()]
    problem = bcc_problem()
    runnable = [c for c in cs if not (problem and c.name.startswith("BCC"))]
    skipped = [Row("all", c.name, skipped=problem or "") for c in cs if c not in runnable]
    scen = args.scenarios.split(",")
    n = 200_000 if args.quick else 500_000
    secs = 1.5 if args.quick else 3.0
    times = 1 if args.quick else args.repeat
    drain_times = 2 * times - 1 if times > 1 else 1  # cheap: 5 runs
    streams = sum(1 for c in runnable if c.streams)
    names = {c.name for c in runnable}
    PROGRESS.planned = (
        ("drain" in scen) * len(runnable) * drain_times
        + ("live" in scen) * streams * times
        + ("latency" in scen) * 3 * streams * times
        + ("wakeups" in scen and not args.only)
        * (2 + sum(1 for name, _, _ in WAKEUP_PLAN if name in names)) * times
    )
    rows: list[Row] = []
    if "drain" in scen:
        rows += drain(runnable, n, drain_times)
    if "live" in scen:
        rows += live(runnable, secs, times)
    if "latency" in scen:
        rows += latency(runnable, [1_000, 10_000, 100_000], secs, times)
    if "wakeups" in scen and not args.only:
        rows += wakeups(runnable, 2.0 if args.quick else 3.0, times)
    found = targets(rows)
    print()
    print(tables(rows))
    if found:
        print()
        print(targets_table(found))
    for r in skipped:
        print(f"\nskipped {r.consumer}: {r.skipped}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {"machine": {**machine(), "loadavg_at_start": load0},
           "rows": [asdict(r) for r in rows + skipped], "targets": found}
    for name in (f"results-{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(doc, indent=1))
    png = RESULTS / "benchmarks.png"
    why = chart(rows, png)
    print(f"\nresults: {RESULTS / f'results-{stamp}.json'}; chart: "
          f"{png if why is None else 'not drawn: ' + why}")
    return 0


if __name__ == "__main__":
    if shutil.which("clang") is None:
        print("run.py: clang not found (benchmarks/setup.sh installs it)", file=sys.stderr)
    sys.exit(main())
