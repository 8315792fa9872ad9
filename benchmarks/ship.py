"""The fleet path against a bare nats-py loop: ``sudo .venv/bin/python benchmarks/ship.py``.

Starts its own ``nats-server -js`` (loopback, temporary store) and runs,
in interleaved rounds:

* agent: the ``aioringbuf ship`` path (AckedRing walk + decode into
  ExecEvent, the JSON envelope, pipelined publishes, in-order acks handing
  the ring back) over a kernel ring pre-filled with N exec records;
* bare: a nats-py JetStream publish loop of the same N payloads (the
  agent's envelopes, encoded beforehand), with the same window of acks in
  flight: ``js.publish_async``, the broker's and client's cost alone;
* core: the same payloads through nats-py's core ``publish`` with a reply
  inbox and an ack counter, the way the agent publishes: the floor of the
  agent's own technique, nothing decoded, nothing handed back;

and reports events/s of each, agent/bare (the issue's target: >= 70%) and
agent/core (what the agent's own work costs). The records
are real exec records: one is captured from a real exec through the exec
programs, then BPF_PROG_TEST_RUN of tests' ringgen.bpf.o copies it into
the ring N times (its first 8 bytes become ringgen's sequence number, and
are put back before decoding: see RinggenExec).

latency: real execs (``/bin/true``, spawned by another process) at a fixed
rate through the pinned exec programs and a running Shipper; exec (the event's wall time) -> the
JetStream store timestamp of its message, p50 / p99.

Speed numbers are only worth comparing on a quiet machine; ``--quick``
is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # natsserver.py, ringgen.py: the tests' own helpers

import nats  # noqa: E402
from natsserver import NatsServer  # noqa: E402
from ringgen import Generator  # noqa: E402

import aioringbuf  # noqa: E402
from aioringbuf import ExecEvent  # noqa: E402
from aioringbuf._acked import AckedRing  # noqa: E402
from aioringbuf._pin import open_pinned, remove_pinned  # noqa: E402
from aioringbuf._ship import ShipOptions, Shipper, envelope  # noqa: E402

RINGGEN = ROOT / "tests" / "bpf" / "ringgen.bpf.o"
BPFFS = "/sys/fs/bpf"
PIN_PREFIX = "aiorb-bench-"  # + this run's pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_pins(root: str = BPFFS) -> list[str]:
    """Unpin the sets that earlier runs left when killed (SIGKILL skips their
    ``finally``): ``aiorb-bench-<pid>`` directories whose process is gone.

    A dead run's links stay attached while pinned, tracing every exec on the
    machine; a live run's set (its pid exists) is left alone, and
    remove_pinned() touches only the names a pinned set contains.
    """
    removed = []
    for name in sorted(os.listdir(root)):
        pid = name.removeprefix(PIN_PREFIX)
        if pid != name and pid.isdigit() and not pid_alive(int(pid)):
            remove_pinned(os.path.join(root, name))
            removed.append(name)
    return removed


class RinggenExec:
    """ExecEvent's decoder for ringgen's copies of one exec record.

    ringgen writes its sequence number over the record's first 8 bytes
    (struct exec_event's kind and flags): they are put back on a copy of the
    record before ExecEvent's own decoder runs (one extra copy per record).
    """

    prefix = b""

    @classmethod
    def __aioringbuf_decoder__(cls):
        decode = ExecEvent.__aioringbuf_decoder__()
        prefix = cls.prefix

        def restore(buf, off: int, n: int) -> ExecEvent:
            rec = bytearray(buf[off:off + n])
            rec[:8] = prefix
            return decode(rec, 0, n)
        return restore


def capture_exec_record(pin_dir: str) -> bytes:
    """The raw bytes of one real exec record (from the pinned programs' ring)."""
    p = open_pinned(pin_dir, 1 << 20)
    mark = uuid.uuid4().hex

    async def main() -> bytes:
        async with AckedRing(p.ring_fd, None) as ring:
            subprocess.run(["/bin/true", "--benchmark-record", mark, "x" * 40], check=True)
            while True:
                for rec in await ring.batch():
                    if mark.encode() in rec.event:
                        return bytes(rec.event)
                    ring.ack(rec.end)
    try:
        return asyncio.run(main())
    finally:
        p.close()


async def agent_round(url: str, gen: Generator, obj, n: int, window: int, stream: str) -> dict:
    """Fill the ring with n records, then time the Shipper draining them to JetStream."""
    ring = AckedRing(obj.map_fd("events"), RinggenExec,
                     drop_counter_fd=obj.map_fd("events_drops"),
                     budget=min(1024, window))
    shipper = Shipper(ShipOptions([url], stream=stream, host="bench", window=window,
                                  pin_dir="/nonexistent"), say=lambda _: None)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    task = asyncio.ensure_future(shipper.ship(ring))
    while shipper.acknowledged < n:
        await asyncio.sleep(0.001)
        if task.done():
            task.result()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    st = shipper.stats()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {"events": n, "wall_s": wall, "cpu_s": cpu, "events_per_s": n / wall,
            "p50_ack_s": st.latency_p50, "p99_ack_s": st.latency_p99,
            "kernel_drops": st.kernel_drops}


async def bare_round(url: str, payloads: list[tuple[str, bytes]], window: int,
                     stream: str) -> dict:
    """The same payloads, published by a plain nats-py loop with `window` acks in flight."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=window + 16)
    pending: list = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    subject = "aioringbuf.exec.bench"
    for key, body in payloads:
        if len(pending) >= window:
            await pending.pop(0)
        pending.append(await js.publish_async(subject, body, headers={"Nats-Msg-Id": key}))
    for f in pending:
        await f
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await nc.close()
    n = len(payloads)
    return {"events": n, "wall_s": wall, "cpu_s": cpu, "events_per_s": n / wall}


async def core_round(url: str, payloads: list[tuple[str, bytes]], window: int,
                     stream: str) -> dict:
    """The same payloads by core publish with a reply inbox: the agent's technique, bare."""
    nc = await nats.connect(url)
    inbox = nc.new_inbox()
    acked = errors = 0
    moved = asyncio.Event()

    async def on_ack(msg) -> None:
        nonlocal acked, errors
        acked += 1
        if not msg.data or b'"error"' in msg.data:
            errors += 1
        moved.set()

    await nc.subscribe(inbox + ".*", cb=on_ack)
    subject = "aioringbuf.exec.bench"
    n = len(payloads)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for i, (key, body) in enumerate(payloads):
        while i - acked >= window:
            moved.clear()
            await moved.wait()
        await nc.publish(subject, body, reply=f"{inbox}.{i}", headers={"Nats-Msg-Id": key})
    while acked < n:
        moved.clear()
        await moved.wait()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await nc.close()
    if errors:
        raise RuntimeError(f"core round: {errors} of {n} publishes were refused")
    return {"events": n, "wall_s": wall, "cpu_s": cpu, "events_per_s": n / wall}


async def fresh_stream(url: str, name: str, make: bool = True) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.delete_stream(name)
    except Exception:
        pass
    if make:
        await js.add_stream(name=name, subjects=["aioringbuf.exec.>"], duplicate_window=120)
    await nc.close()


# The latency run's execs come from another process: forking from the
# agent's own would stall its event loop, and that stall is not the path's.
SPAWN = """
import subprocess, sys, time
mark, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.perf_counter()
for i in range(n):
    subprocess.run(["/bin/true", mark, str(i)])
    time.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
"""


async def latency_run(url: str, pin_dir: str, rate: float, seconds: float) -> dict:
    shipper = Shipper(ShipOptions([url], stream="BENCH_LAT", host="lat", pin_dir=pin_dir),
                      say=lambda _: None)
    task = asyncio.ensure_future(shipper.run())
    await shipper.ready.wait()
    mark = uuid.uuid4().hex
    nc = await nats.connect(url)
    js = nc.jetstream()
    lat: list[float] = []

    async def on_msg(msg) -> None:
        doc = json.loads(msg.data)
        ev = doc["event"]
        if ev["filename"] == "/bin/true" and mark in ev["argv"]:  # not the spawner's own
            stored = msg.metadata.timestamp.timestamp()
            exec_wall = doc["time_ns"] / 1e9  # the exec's wall time on this host
            lat.append(stored - exec_wall)

    for _ in range(100):
        try:
            sub = await js.subscribe("aioringbuf.exec.lat", stream="BENCH_LAT",
                                     ordered_consumer=True, cb=on_msg)
            break
        except Exception:
            await asyncio.sleep(0.1)
    n = int(rate * seconds)
    spawner = await asyncio.create_subprocess_exec(sys.executable, "-c", SPAWN, mark, str(n),
                                                   str(rate))
    await spawner.wait()
    for _ in range(100):
        if len(lat) >= n:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    await nc.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lat.sort()
    return {"execs": n, "received": len(lat), "rate": rate,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, len(lat) * 99 // 100)] if lat else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="records per throughput round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--rate", type=float, default=200.0, help="execs/s in the latency run")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = ap.parse_args()
    if args.quick:
        args.events, args.rounds, args.seconds = 5_000, 1, 1.0
    if not RINGGEN.exists():
        subprocess.run(["make", "-s", "-C", str(ROOT / "bpf")], check=True)
    for name in remove_stale_pins():
        print(f"removed the pinned set {BPFFS}/{name} of a killed earlier run", file=sys.stderr)
    pin_dir = f"{BPFFS}/{PIN_PREFIX}{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="aiorb-bench-nats-") as tmp:
        server = NatsServer(tmp)
        server.start()
        try:
            record = capture_exec_record(pin_dir)
            RinggenExec.prefix = record[:8]
            rows = run_rounds(server.url, record, args)
            asyncio.run(fresh_stream(server.url, "BENCH", make=False))
            lat = asyncio.run(latency_run(server.url, pin_dir, args.rate, args.seconds))
        finally:
            server.kill()
            remove_pinned(pin_dir)
    report(rows, lat, args, len(record))


async def peek(obj, n: int) -> list[tuple[str, bytes]]:
    """The agent's envelopes of the ring's records, without acking (the ring stays full)."""
    out: list[tuple[str, bytes]] = []
    async with AckedRing(obj.map_fd("events"), RinggenExec) as ring:
        while len(out) < n:
            for rec in await ring.batch():
                out.append((rec.key + "-bare", envelope("bench", rec.key, rec.event)))
    return out


def run_rounds(url: str, record: bytes, args: argparse.Namespace) -> dict[str, list[dict]]:
    ring_size = 1 << 26
    per_round = min(args.events, ring_size // ((len(record) + 8 + 7) & ~7) - 1)
    rows: dict[str, list[dict]] = {"agent": [], "bare": [], "core": []}
    kinds = list(rows)
    for r in range(args.rounds):
        with aioringbuf.load(RINGGEN, attach=False, map_sizes={"events": ring_size}) as obj:
            gen = Generator(obj)
            gen.produce(per_round, record[8:])  # ringgen writes the seq, then the payload
            # The bare loop's payloads: the same records, decoded and enveloped up front.
            payloads = asyncio.run(peek(obj, per_round))
            args.payload_bytes = statistics.mean(len(b) for _, b in payloads)
            order = kinds[r % 3:] + kinds[:r % 3]  # each row first in turn
            for kind in order:
                stream = "BENCH"  # made afresh for every row (one stream holds the subjects)
                asyncio.run(fresh_stream(url, stream))
                if kind == "agent":
                    res = asyncio.run(agent_round(url, gen, obj, per_round, args.window, stream))
                elif kind == "bare":
                    res = asyncio.run(bare_round(url, payloads, args.window, stream))
                else:
                    res = asyncio.run(core_round(url, payloads, args.window, stream))
                rows[kind].append(res)
            gen.close()
    return rows


def report(rows: dict[str, list[dict]], lat: dict, args: argparse.Namespace,
           record_len: int) -> None:
    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in rows[kind])

    def ratios(kind: str) -> list[float]:
        return [a["events_per_s"] / b["events_per_s"]
                for a, b in zip(rows["agent"], rows[kind], strict=True)]

    print(f"exec record: {record_len} bytes in the ring; JSON envelope "
          f"{args.payload_bytes:.0f} bytes + Nats-Msg-Id; window {args.window}; "
          f"{rows['agent'][0]['events']} events x {args.rounds} rounds")
    print(f"{'row':<8} {'events/s':>10} {'cpu us/event':>13}")
    for kind in ("agent", "bare", "core"):
        eps = med(kind, "events_per_s")
        cpu = statistics.median(r["cpu_s"] / r["events"] for r in rows[kind]) * 1e6
        print(f"{kind:<8} {eps:>10.0f} {cpu:>13.1f}")
    for kind, what in (("bare", "target >= 70%"), ("core", "the agent's own work")):
        rs = ratios(kind)
        print(f"agent / {kind}: {statistics.median(rs):.0%} ({what}; per round: "
              + ", ".join(f"{x:.0%}" for x in rs) + ")")
    print(f"latency exec -> stored in JetStream at {lat['rate']:g} execs/s: p50 "
          f"{lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms "
          f"({lat['received']} of {lat['execs']} execs)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "ship-latest.json").write_text(json.dumps({"rows": rows, "latency": lat,
                                                      "window": args.window}, indent=1))


if __name__ == "__main__":
    main()
