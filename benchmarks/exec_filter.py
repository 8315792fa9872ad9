"""What exec tracing costs per exec, with and without an in-kernel filter:
``sudo .venv/bin/python benchmarks/exec_filter.py [--quick]``.

One spawner (benchmarks/c/exec_spawner.c: posix_spawn + waitpid of
/bin/true, N times, pinned to CPU 1) runs under four conditions, in
interleaved rounds (each round runs every row once, in a rotated order):

* no tracer;
* ``exec_events()`` consumed by ``async for`` in another process (pinned to
  CPU 0), unfiltered: every exec enters the ring and is decoded;
* ``exec_events(uid=U)``, U a uid nobody has: the BPF programs still run
  on every exec, the filter drops the record before the ring;
* ``exec_events(cgroup=C)``, C an empty cgroup made for the run under
  the cgroup v2 mount (removed at the end).

Per row: the spawner's wall time and CPU (its own and its children's: the
BPF programs run in the exec'ing child) per exec, the consumer's CPU per
exec and the events it received (other processes' execs on the machine
count too: it traces the whole machine). "Added" is a row minus the
no-tracer row of the same round; the tables show medians and [min, max]
over rounds. Results go to benchmarks/results/exec-filter-<time>.json and
exec-filter-latest.json.

Needs root and two CPUs; numbers are only worth comparing on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import secrets
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aioringbuf._cgroup import cgroup2_mount

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
RESULTS = HERE / "results"
SPAWNER = BUILD / "exec_spawner"
CONSUMER = HERE / "consumers" / "exec_filter_consumer.py"
CONSUMER_CPU, SPAWNER_CPU = 0, 1
TARGET = "/bin/true"
ROWS = ("no tracer", "exec_events()", "exec_events(uid=)", "exec_events(cgroup=)")


def build() -> None:
    BUILD.mkdir(exist_ok=True)
    subprocess.run(["make", "-s", "-C", str(ROOT / "bpf")], check=True)  # exec.bpf.o
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(SPAWNER),
                    str(HERE / "c/exec_spawner.c")], check=True)


def unused_uid() -> int:
    """A uid with no passwd entry and no process: nothing on the machine execs as it."""
    in_use = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    in_use.update(int(u) for u in line.split()[1:])
        except OSError:
            continue  # the process ended
    while True:
        uid = 3_000_000_000 + secrets.randbelow(1_000_000_000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in in_use:
                return uid


def spawn(n: int) -> dict[str, float]:
    """One spawner run: N execs; its JSON line (execs, wall_s, cpu_s)."""
    out = subprocess.run(["taskset", "-c", str(SPAWNER_CPU), str(SPAWNER), str(n), TARGET],
                         capture_output=True, text=True, timeout=60 + n * 0.01, check=False)
    if out.returncode:
        raise RuntimeError(f"spawner failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


class Consumer:
    """The exec_filter_consumer.py process of one row (started and ended by this object)."""

    def __init__(self, filters: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CONSUMER), str(CONSUMER_CPU), json.dumps(filters)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT)
        line = self._line(30.0)
        if line != "ready":
            raise RuntimeError(f"consumer said {line!r}")

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            tail = " | ".join(err.strip().splitlines()[-3:]) or "no output"
            raise RuntimeError(f"consumer (pid {self.proc.pid}): {tail}")
        return line.strip()

    def report(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return json.loads(self._line(10.0))

    def settle(self, at_least: int, timeout: float = 10.0) -> dict[str, float]:
        """The report once the consumer has ``at_least`` events and no more arrive."""
        deadline = time.monotonic() + timeout
        last = self.report()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.report()
            if now["events"] >= at_least and now["events"] == last["events"]:
                return now
            last = now
        return last

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # end of stdin: it closes its stream and exits
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def run_row(row: str, n: int, uid: int, cgroup: str) -> dict[str, float]:
    filters: dict[str, Any] | None = {
        "no tracer": None, "exec_events()": {}, "exec_events(uid=)": {"uid": uid},
        "exec_events(cgroup=)": {"cgroup": cgroup}}[row]
    if filters is None:
        res = spawn(n)
        return {**res, "events": 0, "consumer_cpu_s": 0.0}
    consumer = Consumer(filters)
    try:
        before = consumer.report()
        res = spawn(n)
        after = consumer.settle(before["events"] + (n if row == "exec_events()" else 0))
    finally:
        consumer.close()
    return {**res, "events": after["events"] - before["events"],
            "consumer_cpu_s": after["cpu_s"] - before["cpu_s"]}


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}, {max(values):.1f}]"


def table(runs: dict[str, list[dict[str, float]]], n: int) -> str:
    base = runs["no tracer"]

    def per_exec(r: dict[str, float], key: str) -> float:
        return r[key] / r["execs"] * 1e6

    head = (f"{'row':<22} {'wall us/exec':>22} {'added wall us/exec':>22} "
            f"{'spawner cpu us/exec':>22} {'added cpu us/exec':>22} "
            f"{'consumer cpu us/exec':>22} {'events/exec':>11}")
    lines = [head, "-" * len(head)]
    for row in ROWS:
        rs = runs[row]
        wall = [per_exec(r, "wall_s") for r in rs]
        cpu = [per_exec(r, "cpu_s") for r in rs]
        added_wall = [w - per_exec(b, "wall_s") for w, b in zip(wall, base, strict=True)]
        added_cpu = [c - per_exec(b, "cpu_s") for c, b in zip(cpu, base, strict=True)]
        cons = [per_exec(r, "consumer_cpu_s") for r in rs]
        events = statistics.median(r["events"] / r["execs"] for r in rs)
        dash = f"{'-':>22}"
        lines.append(f"{row:<22} {stats(wall):>22} "
                     f"{dash if row == 'no tracer' else stats(added_wall):>22} "
                     f"{stats(cpu):>22} {dash if row == 'no tracer' else stats(added_cpu):>22} "
                     f"{dash if row == 'no tracer' else stats(cons):>22} {events:>11.2f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=10_000, help="execs per row and round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 2,000 execs")
    ap.add_argument("--no-build", action="store_true", help="skip make / gcc")
    args = ap.parse_args()
    if args.quick:
        args.execs, args.rounds = 2_000, 3
    if os.geteuid() != 0:
        print("exec_filter.py needs root (it loads BPF programs)", file=sys.stderr)
        return 1
    if not args.no_build:
        build()
    uid = unused_uid()
    mount = cgroup2_mount()
    if mount is None:
        print("exec_filter.py: no cgroup v2 hierarchy mounted", file=sys.stderr)
        return 1
    cgroup = f"{mount}/aiorb-bench-filter-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(cgroup)  # empty: no exec happens in it
    runs: dict[str, list[dict[str, float]]] = {row: [] for row in ROWS}
    load0 = os.getloadavg()
    try:
        spawn(min(args.execs, 500))  # warm-up (page cache, dentries), not recorded
        for r in range(args.rounds):
            order = ROWS[r % len(ROWS):] + ROWS[:r % len(ROWS)]
            for row in order:
                runs[row].append(run_row(row, args.execs, uid, cgroup))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        os.rmdir(cgroup)
    print(f"{args.execs} execs of {TARGET} per row x {args.rounds} rounds; spawner on CPU "
          f"{SPAWNER_CPU}, consumer on CPU {CONSUMER_CPU}; loadavg at start "
          f"{load0[0]:.2f}; median [min, max] over rounds; added = row - no tracer, "
          "same round")
    print(table(runs, args.execs))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {"machine": {"kernel": platform.release(), "python": platform.python_version(),
                       "cpus": os.cpu_count(), "loadavg_at_start": load0},
           "execs": args.execs, "rounds": args.rounds, "uid": uid, "runs": runs}
    for name in (f"exec-filter-{stamp}.json", "exec-filter-latest.json"):
        (RESULTS / name).write_text(json.dumps(doc, indent=1))
    print(f"\nresults: {RESULTS / f'exec-filter-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
