"""Each bad input gets its typed error, with a message that says what to do."""

from __future__ import annotations

import shutil
import sys

import pytest
from privileges import run_with_caps
from ringgen import Rec

import aioringbuf
from aioringbuf import U64, Bytes, Event, _syscall

pytestmark = pytest.mark.anyio


async def test_missing_object_file(kernel, tmp_path) -> None:
    with pytest.raises(aioringbuf.BpfObjectError, match="not found; build it"):
        async with aioringbuf.load(tmp_path / "nope.bpf.o"):
            pass


@pytest.mark.parametrize("content", ["text", "x86 elf", "truncated"])
async def test_file_that_is_not_a_bpf_object(bpf_objects, tmp_path, content: str) -> None:
    path = tmp_path / "bad.o"
    if content == "text":
        path.write_text("hello\n")
    elif content == "x86 elf":
        shutil.copy(sys.executable, path)
    else:
        path.write_bytes((bpf_objects / "ringgen.bpf.o").read_bytes()[:300])
    with pytest.raises(aioringbuf.BpfObjectError) as info:
        async with aioringbuf.load(path):
            pass
    assert {"text": "not an ELF", "x86 elf": "not BPF", "truncated": "truncated"}[content] in str(
        info.value
    )


async def test_unknown_map_name(bpf_objects) -> None:
    async with aioringbuf.load(bpf_objects / "ringgen.bpf.o", attach=False) as obj:
        with pytest.raises(aioringbuf.MapNotFoundError, match="its maps are: counters, events"):
            obj.ring_buffer("evnets")


async def test_map_that_is_not_a_ring_buffer(bpf_objects) -> None:
    async with aioringbuf.load(bpf_objects / "ringgen.bpf.o", attach=False) as obj:
        with pytest.raises(aioringbuf.WrongMapTypeError, match="array map, not a ringbuf"):
            obj.ring_buffer("counters")
        with pytest.raises(aioringbuf.WrongMapTypeError, match="percpu_array"):
            aioringbuf.RingBuffer(obj.map_fd("events_drops"))


def test_fd_that_is_not_a_map(kernel) -> None:
    with open("/dev/null") as f, pytest.raises(ValueError, match="not an open BPF map fd"):
        aioringbuf.RingBuffer(f.fileno())


@pytest.mark.parametrize("size", [12345, 3 * 4096, 2048, 0])
async def test_bad_ring_size_is_refused_before_the_kernel_sees_it(bpf_objects, size) -> None:
    with pytest.raises(aioringbuf.RingSizeError, match="power of two and a multiple of the page"):
        async with aioringbuf.load(bpf_objects / "ringgen.bpf.o", map_sizes={"events": size}):
            pass


async def test_ring_size_option_resizes_the_map(bpf_objects) -> None:
    path = bpf_objects / "ringgen.bpf.o"
    async with aioringbuf.load(path, attach=False, map_sizes={"events": 1 << 16}) as obj:
        assert _syscall.map_info(obj.map_fd("events")).max_entries == 1 << 16
        assert _syscall.map_info(obj.map_fd("counters")).max_entries == 1  # untouched


async def test_event_type_larger_than_the_ring(ringgen_factory) -> None:
    class Huge(Event):
        seq: U64
        blob: Bytes[8192]

    gen = ringgen_factory(4096)
    with pytest.raises(aioringbuf.EventLayoutError, match="holds only 4096"):
        gen.obj.ring_buffer("events", Huge)


async def test_two_consumers_on_one_ring(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Rec):
        with pytest.raises(aioringbuf.ConsumerBusyError, match="one consumer"):
            aioringbuf.RingBuffer(gen.obj.map_fd("events"), Rec)
    async with gen.obj.ring_buffer("events", Rec):  # free again after close
        pass


def test_bad_options(ringgen_factory) -> None:
    gen = ringgen_factory()
    fd = gen.obj.map_fd("events")
    for kw in ({"overflow": "drop_all"}, {"maxsize": 0}, {"flush_interval": 0}):
        with pytest.raises(ValueError):
            aioringbuf.RingBuffer(fd, **kw)


def test_not_privileged_says_what_is_needed(bpf_objects) -> None:
    code = (
        "import aioringbuf, sys\n"
        "try:\n"
        "    aioringbuf.load('getpgid.bpf.o').open()\n"
        "except aioringbuf.NotPrivilegedError as e:\n"
        "    print(type(e).__name__, e); sys.exit(3)\n"
    )
    proc = run_with_caps(code, files=(str(bpf_objects / "getpgid.bpf.o"),))
    assert proc.returncode == 3, proc.stderr
    assert "NotPrivilegedError" in proc.stdout
    assert "CAP_BPF" in proc.stdout and "CAP_PERFMON" in proc.stdout
    assert "libbpf" not in proc.stderr  # refused before libbpf's long story


def test_not_privileged_pinned_map(ringgen_factory, bpffs, tmp_path) -> None:
    gen = ringgen_factory()
    path = bpffs / f"aioringbuf-priv-{tmp_path.name}"
    _syscall.obj_pin(gen.obj.map_fd("events"), str(path))
    try:
        code = (
            "import aioringbuf, sys\n"
            "try:\n"
            f"    aioringbuf.RingBuffer.from_pinned({str(path)!r})\n"
            "except PermissionError as e:\n"
            "    print(type(e).__name__, e); sys.exit(3)\n"
        )
        proc = run_with_caps(code)
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout.startswith("NotPrivilegedError") and "CAP_BPF" in proc.stdout
    finally:
        path.unlink()
