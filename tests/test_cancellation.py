"""Cancel and close at random points, reopen the same pinned ring, repeat:
every record is delivered exactly once, in order, and nothing leaks."""

from __future__ import annotations

import os
import pathlib
import random

import anyio
import pytest
from ringgen import Rec

import aioringbuf
from aioringbuf import _syscall

pytestmark = pytest.mark.anyio


def epoll_watches() -> set[int]:
    """Every fd registered with any epoll instance of this process (any loop)."""
    watched = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = pathlib.Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("tfd:"):
                watched.add(int(line.split()[1]))
    return watched


def snapshot() -> tuple[set[str], list[str]]:
    fds = {f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}" for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")}
    maps = [m for m in pathlib.Path("/proc/self/maps").read_text().splitlines()
            if "anon_inode:bpf" in m]
    return fds, maps


async def one_session(rb: aioringbuf.RingBuffer, rng: random.Random, got: list[int]) -> None:
    """Consume until a random cancel deadline or a random count, in a random style."""
    want = rng.randrange(0, 50)
    deadline = rng.choice([0, 0.0005, 0.002, 0.01])
    bare = rng.random() < 0.5
    with anyio.move_on_after(deadline):
        if bare:
            async for ev in rb:  # a cancelled bare loop closes the stream itself
                got.append(ev.seq)
                if len(got) % 50 == want:
                    break
        else:
            async with rb:
                while len(got) % 50 != want:
                    got.append((await rb.receive()).seq)
    await rb.aclose()


async def test_random_cancellation_never_duplicates_or_loses(ringgen_factory, bpffs, tmp_path):
    gen = ringgen_factory(1 << 18)
    rng = random.Random(0xA10)
    pin = bpffs / f"aioringbuf-cancel-{tmp_path.name}"
    _syscall.obj_pin(gen.obj.map_fd("events"), str(pin))
    got: list[int] = []
    try:
        # Let every backend open its own lazily created fds first.
        await one_session(aioringbuf.RingBuffer.from_pinned(str(pin), Rec), rng, got)
        before, watches = snapshot(), epoll_watches()
        for _ in range(200):
            if rng.random() < 0.6:
                gen.produce(rng.randrange(0, 40))
            await one_session(aioringbuf.RingBuffer.from_pinned(str(pin), Rec), rng, got)
        async with aioringbuf.RingBuffer.from_pinned(str(pin), Rec) as rb:
            with anyio.fail_after(10):
                while len(got) < gen.produced():
                    got.append((await rb.receive()).seq)
        assert snapshot() == before
        assert epoll_watches() == watches
    finally:
        pin.unlink()
    assert got == list(range(gen.produced()))  # once each, in order
    assert gen.produced() > 1000
