"""tagged(): several event types on one ring, told apart by a leading u32 tag."""

from __future__ import annotations

import struct
from typing import ClassVar

import anyio
import pytest

import aioringbuf
from aioringbuf import U16, U32, U64, CStr, Event, Tail
from aioringbuf._exec import ExecEvent, ExitEvent
from aioringbuf._union import tagged


class Open(Event):
    __aioringbuf_tag__: ClassVar[int] = 1
    kind: U32
    fd: U32
    path: CStr[8]


class Close(Event):
    __aioringbuf_tag__: ClassVar[int] = 7
    kind: U32
    fd: U32
    ts: U64


def test_each_record_decodes_as_its_tags_type() -> None:
    both = tagged(Open, Close)
    opened = aioringbuf.types.decode(both, struct.pack("<II8s", 1, 3, b"/etc\0"))
    closed = aioringbuf.types.decode(both, struct.pack("<IIQ", 7, 3, 99))
    assert opened == Open(1, 3, "/etc") and closed == Close(7, 3, 99)
    with pytest.raises(aioringbuf.DecodeError, match=r"tag 2 is none of Open \| Close"):
        aioringbuf.types.decode(both, struct.pack("<IIQ", 2, 3, 99))
    with pytest.raises(aioringbuf.RecordSizeError):
        aioringbuf.types.decode(both, b"\1\0")
    with pytest.raises(aioringbuf.RecordSizeError):  # the member type's own size check
        aioringbuf.types.decode(both, struct.pack("<II", 7, 3))


def test_custom_decoders_mix_with_compiled_ones() -> None:
    raw = struct.pack("<IIQQQIIIiI16s4x", 2, 1, 5, 6, 7, 8, 9, 10, 3, 0, b"sleep")
    ev = aioringbuf.types.decode(tagged(ExecEvent, ExitEvent), raw)
    assert isinstance(ev, ExitEvent) and (ev.pid, ev.exit_code, ev.comm) == (8, 3, "sleep")
    assert ev.since_exec
    closed = aioringbuf.types.decode(tagged(ExecEvent, Close), struct.pack("<IIQ", 7, 3, 99))
    assert closed == Close(7, 3, 99)  # ExecEvent's hook beside a compiled layout


def test_tags_must_be_declared_unique_and_leading() -> None:
    class NoTag(Event):
        kind: U32

    class Same(Event):
        __aioringbuf_tag__: ClassVar[int] = 1
        kind: U32

    class Narrow(Event):
        __aioringbuf_tag__: ClassVar[int] = 3
        kind: U16
        more: U16

    with pytest.raises(aioringbuf.EventLayoutError, match="__aioringbuf_tag__"):
        tagged(Open, NoTag)
    with pytest.raises(aioringbuf.EventLayoutError, match="two event types declare tag 1"):
        tagged(Open, Same)
    with pytest.raises(aioringbuf.EventLayoutError, match="u32 tag"):
        tagged(Open, Narrow)
    with pytest.raises(TypeError):
        tagged(Open)


class Even(Event):
    """ringgen's records seen through a tag: the low half of the sequence number."""

    __aioringbuf_tag__: ClassVar[int] = 0
    seq_lo: U32
    seq_hi: U32
    payload: Tail[bytes]


class Odd(Event):
    __aioringbuf_tag__: ClassVar[int] = 1
    seq_lo: U32
    seq_hi: U32
    payload: Tail[bytes]


@pytest.mark.anyio
async def test_a_union_annotation_reads_a_real_ring(ringgen_factory) -> None:
    """RingBuffer(fd, A | B): the kernel's records 0 and 1 come back as their
    tags' types; record 2 has a tag of neither, a counted decode error."""
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events", Even | Odd) as rb:
        gen.produce(3, b"xyz")
        got = []
        with anyio.fail_after(10):
            while rb.stats().delivered + rb.stats().decode_errors < 3:
                got.append(await rb.receive())
        st = rb.stats()
    assert got == [Even(0, 0, b"xyz"), Odd(1, 0, b"xyz")]
    assert (st.delivered, st.decode_errors, st.kernel_drops) == (2, 1, 0)


def test_a_union_member_too_big_for_the_ring_is_refused() -> None:
    from aioringbuf._codec import check_layout
    from aioringbuf._union import record_type

    class Big(Event):
        __aioringbuf_tag__: ClassVar[int] = 2
        kind: U32
        blob: aioringbuf.Bytes[8192]

    with pytest.raises(aioringbuf.EventLayoutError, match="Big needs"):
        check_layout(record_type(Open | Big), 4096, 8, "ring buffer 'x'", "use a larger ring")
    assert record_type(Open | Close) is record_type(Open | Close)  # one type per union
