"""Memory ordering and the CPU: the ordered accesses of both twins, the
pure-Python path's refusal off x86-64, the syscall table, and quiet()."""

from __future__ import annotations

import mmap

import pytest

import aioringbuf
from aioringbuf import _fast, _order, _ringmap, _syscall

fastring = pytest.importorskip("aioringbuf._fastring", reason="the C extension is not built")

TWINS = [_order, fastring]


@pytest.mark.parametrize("twin", TWINS, ids=["python", "c"])
def test_ordered_accesses_read_and_write_native_u64_words(twin) -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE)
    for off, value in [(0, 1), (8, 2**64 - 1), (mmap.PAGESIZE - 8, 12345)]:
        twin.store_release(page, off, value)
        assert twin.load_acquire(page, off) == value
        assert int.from_bytes(page[off : off + 8], "little") == value
    twin.full_fence()
    page.close()


def test_c_refuses_words_that_are_not_aligned_or_not_inside() -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE)
    for off in (4, mmap.PAGESIZE - 4, mmap.PAGESIZE, -8):
        with pytest.raises(ValueError, match="no aligned 8-byte word"):
            fastring.load_acquire(page, off)
    with pytest.raises(BufferError):  # a read-only buffer cannot take a store
        fastring.store_release(b"\0" * 16, 0, 1)
    page.close()


def test_the_pure_python_path_refuses_cpus_without_tso(monkeypatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    _order.require_tso()
    for machine in ("aarch64", "ppc64le", ""):
        monkeypatch.setattr("platform.machine", lambda m=machine: m)
        with pytest.raises(_order.UnsupportedCPUError, match=r"Build it .* unset AIORINGBUF_PURE"):
            _order.require_tso()


def test_the_path_in_use_checks_the_cpu_where_it_should() -> None:
    if _fast.IMPLEMENTATION == "c":
        assert _fast.load_acquire is fastring.load_acquire
        assert _fast.full_fence is fastring.full_fence
    else:
        assert _fast.check_cpu is _order.require_tso
        assert _fast.load_acquire is _order.load_acquire


def test_bpf_and_perf_event_open_numbers_come_from_a_table(monkeypatch) -> None:
    assert _syscall.syscall_number("bpf", "x86_64") == 321
    assert _syscall.syscall_number("perf_event_open", "x86_64") == 298
    assert _syscall.syscall_number("bpf", "aarch64") == 280
    assert _syscall.syscall_number("perf_event_open", "aarch64") == 241
    with pytest.raises(_order.UnsupportedCPUError, match=r"bpf\(2\) syscall number on sparc64"):
        _syscall.syscall_number("bpf", "sparc64")


def test_opening_a_ring_refuses_a_pure_python_path_off_x86_64(ringgen_factory,
                                                              monkeypatch) -> None:
    gen = ringgen_factory()
    monkeypatch.setattr(_ringmap, "check_cpu", _order.require_tso)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(_order.UnsupportedCPUError, match="aarch64"):
        aioringbuf.RingBuffer(gen.obj.map_fd("events"))
    monkeypatch.undo()
    aioringbuf.RingBuffer(gen.obj.map_fd("events")).close()  # nothing was left claimed


def test_quiet_says_whether_records_arrived_after_the_commit(ringgen_factory) -> None:
    gen = ringgen_factory()
    mem = _ringmap.RingMemory(gen.obj.map_fd("events"), 64 * 1024)
    try:
        assert mem.quiet()
        gen.produce(2, b"x")
        assert not mem.quiet()  # a stream reads again instead of sleeping
        mem.publish_consumer_pos(mem.producer_pos())
        assert mem.quiet() and mem.consumer_pos() == mem.producer_pos() > 0
    finally:
        mem.close()
