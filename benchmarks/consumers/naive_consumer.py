"""A plain pure-Python ring buffer consumer: mmap, struct.unpack_from, epoll.

What one writes in an afternoon without a library, and the yardstick of
aioringbuf's pure-Python path (issue 13: its ``async for`` must not be
slower than this). The BPF object is loaded with aioringbuf (loading is
not timed); the reading is only the standard library: the consumer page
mapped read-write, the producer page and the data area (mapped twice by
the kernel) read-only, each record's header and fields with
struct.unpack_from into one tuple, consumer_pos written back after each
pass, epoll to wait. No ordering care beyond x86-64's, no decoding into
objects, no accounting: see common.py for the protocol.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import time

import common

import aioringbuf
from aioringbuf import _syscall  # only to write the control map

OBJECT = os.environ["BENCH_OBJECT"]
BUSY, DISCARD = 1 << 31, 1 << 30


def main(args: common.Args) -> None:
    if args.kind != "ring":
        raise SystemExit("the naive consumer reads ring buffers only")
    obj = aioringbuf.load(OBJECT, map_sizes={"ring": args.size}).open()
    ctl = obj.map_fd("control")
    _syscall.map_update(ctl, common.MODE, common.MODES["ring"].to_bytes(8, "little"))
    _syscall.map_update(ctl, common.TARGET, args.pid.to_bytes(8, "little"))
    fd = obj.map_fd("ring")
    page, size = mmap.PAGESIZE, args.size
    cons_page = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    data = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    u64 = struct.Struct("<Q")
    header = struct.Struct("<I").unpack_from
    record = struct.Struct(common.RECORD_FORMAT).unpack_from
    mask = size - 1
    latency = args.mode == "latency"
    now = time.monotonic_ns
    lat: list[int] = []

    def drain() -> int:
        """Read every committed record, then hand the space back."""
        cons = u64.unpack_from(cons_page, 0)[0]
        prod = u64.unpack_from(data, 0)[0]
        n = 0
        while cons < prod:
            off = page + (cons & mask)
            length = header(data, off)[0]
            if length & BUSY:
                break
            if not length & DISCARD:
                rec = record(data, off + 8)  # (seq, ts_ns, cpu, pid, arg)
                if latency:
                    lat.append(now() - rec[1])
                n += 1
            cons += ((length & ~(BUSY | DISCARD)) + 8 + 7) & ~7
        u64.pack_into(cons_page, 0, cons)
        return n

    def produced() -> int:
        return int.from_bytes(_syscall.map_lookup(ctl, common.PRODUCED, 8), "little")

    ep = select.epoll()
    ep.register(fd, select.EPOLLIN)
    common.ready()
    target = 0
    if args.mode == "drain":
        common.wait_go()
        target = produced()
    clock = common.Clock()
    clock.start()
    idle = common.Idle()
    count = 0
    while True:
        got = drain()
        count += got
        if args.mode == "drain":
            if count >= target:
                break
        elif idle.over(count):
            break
        if not got:
            ep.poll(0.1)
    clock.stop(None if args.mode == "drain" else idle.last_change)
    common.report(count, produced(), clock, lat, impl="python", style="naive")
    ep.close()
    cons_page.close()
    data.close()
    obj.close()


if __name__ == "__main__":
    main(common.parse())
