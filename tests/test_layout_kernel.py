"""The codec's C layout checked against clang's: a BPF program fills
struct layout_sample (bpf/tests/layout.h) and every field is compared."""

from __future__ import annotations

import os

import pytest

import aioringbuf
from aioringbuf import (
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    Array,
    Bytes,
    CStr,
    Event,
    Tail,
    _syscall,
)

pytestmark = pytest.mark.anyio


class LayoutSample(Event):
    u8: U8
    u16: U16
    u32: U32
    u64: U64
    s8: S8
    s64: S64
    s16: S16
    s32: S32
    name: CStr[5]
    raw: Bytes[3]
    arr: Array[U32, 3]
    last: U8


class LayoutTail(Event):
    kind: U32
    len: U16
    data: Tail[bytes]


def test_offsets_match_the_comments_in_layout_h() -> None:
    lay = aioringbuf.types.layout_of(LayoutSample)
    assert lay.offsets == {
        "u8": 0, "u16": 2, "u32": 4, "u64": 8, "s8": 16, "s64": 24, "s16": 32,
        "s32": 36, "name": 40, "raw": 45, "arr": 48, "last": 60,
    }
    assert lay.size == 64


async def test_kernel_written_struct_decodes_field_by_field(bpf_objects) -> None:
    async with aioringbuf.load(bpf_objects / "layout.bpf.o", attach=False) as obj:
        prog = obj.program_fd("layout")
        try:
            _syscall.prog_test_run(prog, bytes(16))
        finally:
            os.close(prog)
        async with obj.ring_buffer("samples", LayoutSample, on_decode_error="raise") as rb:
            s = await rb.receive()
        async with obj.ring_buffer("tails", LayoutTail, on_decode_error="raise") as rb:
            t = await rb.receive()
    assert s == LayoutSample(
        u8=0xF1, u16=0xF2E3, u32=0xF4E5D6C7, u64=0xF8E9DACBBCAD9E8F, s8=-2,
        s64=-1234567890123, s16=-300, s32=-70000, name="bpf", raw=b"\x00\xff\x07",
        arr=(1, 2, 0xFFFFFFFF), last=0x5A,
    )
    assert t == LayoutTail(kind=9, len=5, data=b"hello")
