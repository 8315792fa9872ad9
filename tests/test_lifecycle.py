"""Closing: nothing left behind (fds, mappings, links), closed-stream semantics."""

from __future__ import annotations

import gc
import os
import pathlib

import anyio
import pytest
from kernelstate import held_by, live_links
from kernelstate import open_fds as fds
from ringgen import Rec

import aioringbuf

pytestmark = pytest.mark.anyio


def bpf_mappings() -> list[str]:
    return [line for line in pathlib.Path("/proc/self/maps").read_text().splitlines()
            if "anon_inode:bpf" in line]


def attached_links() -> list[str]:
    return [f for f in fds() if "anon_inode:bpf_link" in f]


def own_link_ids() -> set[int]:
    """The ids of the BPF links this process holds (never others' on the machine)."""
    return set(held_by(os.getpid()).links)


async def test_close_releases_fds_mappings_and_links(bpf_objects) -> None:
    seen: set[int] = set()

    async def use_once() -> None:
        async with aioringbuf.load(bpf_objects / "getpgid.bpf.o") as obj:
            links = own_link_ids()
            assert attached_links() and live_links(links) == links != set()  # attached now
            seen.update(links)
            async with obj.ring_buffer("events") as rb:
                assert bpf_mappings()  # the ring is mapped while open
                with anyio.move_on_after(0.01):
                    await rb.receive()

    await use_once()  # warm up anyio/asyncio's own lazily opened fds
    gc.collect()
    before_fds, before_maps = fds(), bpf_mappings()
    for _ in range(3):
        await use_once()
    gc.collect()
    assert fds() == before_fds
    assert bpf_mappings() == before_maps == []
    assert attached_links() == []
    assert seen and live_links(seen) == set()  # each one is gone from the kernel


async def test_links_are_detached_when_the_object_closes(bpf_objects) -> None:
    async with aioringbuf.load(bpf_objects / "getpgid.bpf.o") as obj:
        aioringbuf._syscall.map_update(obj.map_fd("control"), 0, os.getpid().to_bytes(8, "little"))
        async with obj.ring_buffer("events") as rb:
            os.getpgid(0)
            with anyio.fail_after(5):
                await rb.receive()  # attached: the syscall produced a record
        control = obj.map_fd("control")
        produced_fd = os.dup(control)
    try:
        before = aioringbuf._syscall.map_lookup(produced_fd, 1, 8)
        os.getpgid(0)
        assert aioringbuf._syscall.map_lookup(produced_fd, 1, 8) == before  # detached
    finally:
        os.close(produced_fd)


async def test_stream_closes_with_its_object(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec)
    gen.obj.close()
    assert rb.closed
    with pytest.raises(anyio.ClosedResourceError):
        await rb.receive()


async def test_closing_wakes_a_blocked_reader(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec)
    async with rb:
        result: list[BaseException] = []

        async def reader() -> None:
            try:
                await rb.receive()
            except anyio.ClosedResourceError as exc:
                result.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.sleep(0.05)  # the reader is registered on the fd now
                await rb.aclose()
        assert len(result) == 1
    await rb.aclose()  # idempotent
    with pytest.raises(anyio.ClosedResourceError):
        await rb.receive()


async def test_cancelling_a_bare_async_for_closes_the_stream(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec)
    gen.produce(3)
    got = []
    with anyio.move_on_after(0.1):
        async for ev in rb:
            got.append(ev.seq)
    assert got == [0, 1, 2] and rb.closed


async def test_cancel_in_async_with_keeps_the_stream_usable(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec) as rb:
        with anyio.move_on_after(0.05):
            await rb.receive()
        assert not rb.closed
        gen.produce(1)
        assert (await rb.receive()).seq == 0


async def test_drop_policy_needs_async_with(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec, overflow="drop_oldest")
    with pytest.raises(aioringbuf.AioRingBufError, match="needs `async with`"):
        await rb.receive()
    rb.close()


async def test_drop_mode_counts_records_left_in_the_queue_at_close(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec, overflow="drop_newest", maxsize=50) as rb:
        gen.produce(80)
        assert (await rb.receive()).seq == 0
        with anyio.fail_after(5):
            while rb.stats().queue_drops < 30:
                await anyio.sleep(0.01)
    s = rb.stats()
    assert s.delivered == 1 and s.queue_drops == 79 and s.queue_len == 0


def test_unclosed_stream_warns_and_is_released(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec)
    gen.obj._streams.clear()  # nothing else holds it
    with pytest.warns(ResourceWarning, match="unclosed"):
        del rb
        gc.collect()
    aioringbuf.RingBuffer(gen.obj.map_fd("events"), Rec).close()  # the ring is free
