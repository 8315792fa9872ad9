"""BCC's ring_buffer_poll / perf_buffer_poll with Python callbacks, as a
benchmark consumer. Runs on Debian's /usr/bin/python3 (python3-bpfcc).

BCC compiles C at run time and cannot load bench.bpf.o, so PROGRAM below
is bench.bpf.c in BCC's dialect: the same tracepoint, filter and 32-byte
record. The callback casts the record with ``table.event(data)``, as BCC's
own tools do (see common.py for the protocol).
"""

from __future__ import annotations

import ctypes as ct
import time

import common
from bcc import BPF

PROGRAM = r"""
struct bench_rec { u64 seq; u64 ts_ns; u32 cpu; u32 pid; u64 arg; };
BPF_ARRAY(control, u64, 4);
#if PERF
BPF_PERF_OUTPUT(perf);
#else
BPF_RINGBUF_OUTPUT(ring, PAGES);
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) {
    int k_target = 0, k_produced = 2;
    u64 *target = control.lookup(&k_target), *produced = control.lookup(&k_produced);
    struct bench_rec rec = {};

    if (!target || !produced || *target != (bpf_get_current_pid_tgid() >> 32))
        return 0;
    rec.seq = __sync_fetch_and_add(produced, 1);
    rec.cpu = bpf_get_smp_processor_id();
    rec.pid = *target;
    rec.arg = args->pid;
#if PERF
    rec.ts_ns = bpf_ktime_get_ns();
    perf.perf_submit(args, &rec, sizeof(rec));
#else
    struct bench_rec *r = ring.ringbuf_reserve(sizeof(rec));
    if (!r)
        return 0;
    rec.ts_ns = bpf_ktime_get_ns();
    *r = rec;
    ring.ringbuf_submit(r, 0);
#endif
    return 0;
}
"""


def main(args: common.Args) -> None:
    perf = args.kind == "perf"
    if args.kind == "ring-adaptive":
        raise SystemExit("BCC's copy of the program has no adaptive mode")
    pages = args.size // 4096
    b = BPF(text=PROGRAM, cflags=[f"-DPERF={int(perf)}", f"-DPAGES={pages}"])
    control = b["control"]
    control[ct.c_int(common.TARGET)] = ct.c_ulonglong(args.pid)
    now = time.monotonic_ns
    count = [0]
    lat: list[int] = []
    table = b["perf" if perf else "ring"]

    # (ctx, data, size) for ring buffers, (cpu, data, size) for perf buffers
    if args.mode == "latency":
        def callback(ctx, data, size):
            ev = table.event(data)
            lat.append(now() - ev.ts_ns)
            count[0] += 1
    else:
        def callback(ctx, data, size):
            table.event(data)
            count[0] += 1

    if perf:
        table.open_perf_buffer(callback, page_cnt=pages)
        poll = b.perf_buffer_poll
    else:
        table.open_ring_buffer(callback)
        poll = b.ring_buffer_poll

    def produced() -> int:
        return control[ct.c_int(common.PRODUCED)].value

    common.run_polling(args.mode, poll, count, produced, lat)


if __name__ == "__main__":
    main(common.parse())
