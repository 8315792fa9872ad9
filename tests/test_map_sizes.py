"""Map sizes are checked before the BTF is rewritten (issue #12, row 10).

A BTF-defined map holds max_entries as the length of an int array; the
kernel refuses BTF arrays of more than U32_MAX bytes, and struct.pack
refuses lengths of 2^32 and more. Both must be a typed error, raised
before anything is written, never libbpf's log or a struct.error.
"""

from __future__ import annotations

import pytest

import aioringbuf
from aioringbuf._elf import BpfElf
from aioringbuf._exec import EXEC_OBJECT
from aioringbuf._ringmap import MAX_ENTRIES, MAX_RING_SIZE


def elf() -> BpfElf:
    return BpfElf.from_path(str(EXEC_OBJECT))


@pytest.mark.parametrize("size", [1 << 30, 1 << 31, 1 << 32, (1 << 32) + 4096, 1 << 64])
def test_rings_beyond_the_kernel_limit(size: int) -> None:
    e = elf()
    before = bytes(e.data)
    with pytest.raises(aioringbuf.RingSizeError, match="at most 536870912 bytes"):
        e.set_max_entries({"events": size})
    assert bytes(e.data) == before  # nothing rewritten
    with pytest.raises(aioringbuf.RingSizeError):
        aioringbuf.exec_events(ring_size=size)


@pytest.mark.parametrize("size", [0, -1, MAX_ENTRIES + 1, 1 << 32, 2.5, True])
def test_other_maps_beyond_what_btf_can_say(size: object) -> None:
    e = elf()
    before = bytes(e.data)
    with pytest.raises(aioringbuf.MapSizeError, match="max_entries must be an int from 1"):
        e.set_max_entries({"inflight": size})  # type: ignore[dict-item]
    assert bytes(e.data) == before


def test_one_bad_size_among_good_ones_rewrites_nothing() -> None:
    e = elf()
    before = bytes(e.data)
    with pytest.raises(aioringbuf.MapSizeError):
        e.set_max_entries({"events": 1 << 20, "inflight": 0})
    assert bytes(e.data) == before and e.maps["events"].max_entries == 8 << 20


def test_the_largest_sizes_are_accepted() -> None:
    e = elf()
    e.set_max_entries({"events": MAX_RING_SIZE, "inflight": MAX_ENTRIES})
    assert e.maps["events"].max_entries == MAX_RING_SIZE == 1 << 29
    assert e.maps["inflight"].max_entries == MAX_ENTRIES
