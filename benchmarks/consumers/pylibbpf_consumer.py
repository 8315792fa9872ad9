"""pylibbpf's PerfEventArray with a Python callback, as a benchmark consumer.

The same bench.bpf.o, loaded and attached by pylibbpf; the callback gets
(cpu, bytes) and decodes the 32-byte record with struct, as a user of
pylibbpf does (see common.py for the protocol).
"""

from __future__ import annotations

import os
import struct
import time

import common
import pylibbpf

from aioringbuf import _syscall  # only to write the control map: pylibbpf's update wants ctypes

OBJECT = os.environ["BENCH_OBJECT"]


def main(args: common.Args) -> None:
    if args.kind != "perf":
        raise SystemExit("pylibbpf has no ring buffer consumer")
    obj = pylibbpf.BpfObject(OBJECT)
    obj.load()
    obj.attach_all()
    ctl = obj["control"].get_fd()
    _syscall.map_update(ctl, common.MODE, common.MODES["perf"].to_bytes(8, "little"))
    _syscall.map_update(ctl, common.TARGET, args.pid.to_bytes(8, "little"))
    unpack = struct.Struct(common.RECORD_FORMAT).unpack_from
    now = time.monotonic_ns
    count = [0]
    lat: list[int] = []

    # (seq, ts_ns, cpu, pid, arg): what a user of the records unpacks
    if args.mode == "latency":
        def callback(cpu: int, data: bytes) -> None:
            rec = unpack(data)
            lat.append(now() - rec[1])
            count[0] += 1
    else:
        def callback(cpu: int, data: bytes) -> None:
            unpack(data)
            count[0] += 1

    helper = obj["perf"]
    perf = pylibbpf.PerfEventArray(getattr(helper, "_map", helper), args.size // 4096, callback)

    def produced() -> int:
        return int.from_bytes(_syscall.map_lookup(ctl, common.PRODUCED, 8), "little")

    common.run_polling(args.mode, perf.poll, count, produced, lat)


if __name__ == "__main__":
    main(common.parse())
