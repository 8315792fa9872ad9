"""Misuse gets a clear error, and a failed load leaves nothing behind."""

from __future__ import annotations

import errno
import os

import anyio
import pytest
from kernelstate import held_by, open_fds
from ringgen import Rec

import aioringbuf
from aioringbuf import _syscall

pytestmark = pytest.mark.anyio

BPF_F_RB_OVERWRITE = 1 << 19


def kernel_prog_ids() -> set[int]:
    """Programs this process holds (others on the machine may load theirs meanwhile)."""
    return held_by(os.getpid()).progs


async def test_overwrite_mode_ring_is_refused(kernel) -> None:
    try:
        fd = _syscall.map_create(_syscall.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, BPF_F_RB_OVERWRITE)
    except OSError as exc:
        # This kernel predates overwrite mode: it refuses the flag itself.
        assert exc.errno == errno.EINVAL
        return
    try:
        with pytest.raises(aioringbuf.UnsupportedMapError, match="BPF_F_RB_OVERWRITE"):
            aioringbuf.RingBuffer(fd)
    finally:
        os.close(fd)


async def test_standalone_ring_map_works_without_drop_counter(kernel) -> None:
    fd = _syscall.map_create(_syscall.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, name="standalone")
    try:
        async with aioringbuf.RingBuffer(fd) as rb:
            s = rb.stats()
            assert s.kernel_drops is None  # unknown, not zero
            assert (s.ring_size, s.consumer_pos, s.producer_pos) == (4096, 0, 0)
    finally:
        os.close(fd)


async def test_second_receive_on_closed_stream(ringgen_factory) -> None:
    gen = ringgen_factory()
    rb = gen.obj.ring_buffer("events", Rec)
    await rb.aclose()
    for _ in range(2):
        with pytest.raises(anyio.ClosedResourceError):
            await rb.receive()
    with pytest.raises(anyio.ClosedResourceError):
        async with rb:
            pass


@pytest.mark.parametrize("case", ["not bpf", "truncated", "missing map", "bad ring size"])
async def test_failed_loads_leave_nothing_loaded_or_open(bpf_objects, tmp_path, case) -> None:
    good = bpf_objects / "getpgid.bpf.o"
    path = tmp_path / "obj.bpf.o"
    if case == "not bpf":
        path.write_bytes(b"\x7fELF" + bytes(60))
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    else:
        path.write_bytes(good.read_bytes())
    fds, progs = open_fds(), kernel_prog_ids()
    with pytest.raises((aioringbuf.BpfObjectError, aioringbuf.MapNotFoundError,
                        aioringbuf.RingSizeError)):
        if case == "missing map":
            async with aioringbuf.load(path) as obj:
                obj.ring_buffer("no_such_map")
        else:
            sizes = {"events": 5000} if case == "bad ring size" else None
            async with aioringbuf.load(path, map_sizes=sizes):
                pass
    assert open_fds() == fds
    assert kernel_prog_ids() == progs


async def test_resizing_an_unknown_map_names_the_known_ones(bpf_objects) -> None:
    with pytest.raises(aioringbuf.MapNotFoundError, match="maps: control, events, events_drops"):
        async with aioringbuf.load(bpf_objects / "getpgid.bpf.o", map_sizes={"evts": 4096}):
            pass
