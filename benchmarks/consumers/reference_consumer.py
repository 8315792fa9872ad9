"""Reference row, not a ring consumer: what building the same records as
Python objects costs with msgspec's own C decoder, on the same CPU.

It decodes BENCH_RECORDS msgpack-encoded copies of the 32-byte record
(same values: a counter, a nanosecond timestamp, cpu, pid, arg) into a
list of untracked msgspec Structs, 1024 at a time, the batch size of
aioringbuf's ``batches()``; only the decoding is timed. No kernel, no
event loop: the floor that any consumer handing out one Python object per
record stands on. Drain mode only (see common.py for the protocol).
"""

from __future__ import annotations

import os

import common
import msgspec

BATCH = 1024


class Rec(msgspec.Struct, array_like=True, gc=False):
    seq: int
    ts_ns: int
    cpu: int
    pid: int
    arg: int


def main(args: common.Args) -> None:
    if args.mode != "drain":
        raise SystemExit("the reference row runs in drain mode only")
    n = int(os.environ["BENCH_RECORDS"])
    t0 = 4_000_000_000_000
    chunks = [
        msgspec.msgpack.encode([Rec(i, t0 + 700 * i, 1, args.pid, 0)
                                for i in range(start, min(n, start + BATCH))])
        for start in range(0, n, BATCH)
    ]
    decode = msgspec.msgpack.Decoder(list[Rec]).decode
    common.ready()
    common.wait_go()
    clock = common.Clock()
    clock.start()
    delivered = 0
    for chunk in chunks:
        batch = decode(chunk)
        delivered += len(batch)
        del batch
    clock.stop()
    common.report(delivered, delivered, clock)


if __name__ == "__main__":
    main(common.parse())
