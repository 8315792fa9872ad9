"""Stream events from your own BPF program: the getpgid demo.

bpf/tests/getpgid.bpf.c turns every getpgid(n) call of one process into a
ring buffer record. This script loads it, targets itself, calls getpgid()
a few times a second from a worker thread and prints what the kernel sent.

    sudo .venv/bin/python examples/getpgid_events.py [--count N]
"""

from __future__ import annotations

import argparse
import os
import pathlib

import anyio

import aioringbuf
from aioringbuf import U32, U64, CStr, Event

OBJ = pathlib.Path(__file__).resolve().parent.parent / "tests" / "bpf" / "getpgid.bpf.o"


class Sample(Event):
    """Mirrors struct pgid_sample in bpf/tests/sample.h."""

    seq: U64
    ts_ns: U64
    cpu: U32
    pid: U32
    comm: CStr[16]
    arg: U64


async def poke(count: int) -> None:
    for _ in range(count):
        await anyio.to_thread.run_sync(os.getpgid, 0)
        await anyio.sleep(0.2)


async def main(count: int) -> None:
    async with aioringbuf.load(OBJ) as obj:
        aioringbuf._syscall.map_update(obj.map_fd("control"), 0, os.getpid().to_bytes(8, "little"))
        async with obj.ring_buffer("events", Sample) as events, anyio.create_task_group() as tg:
            tg.start_soon(poke, count)
            seen = 0
            async for ev in events:
                print(f"seq={ev.seq} cpu={ev.cpu} pid={ev.pid} comm={ev.comm} getpgid({ev.arg})")
                seen += 1
                if seen == count:
                    break
            print(events.stats())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    anyio.run(main, parser.parse_args().count)
