"""Hostile records: whatever bytes arrive, the stream keeps going and counts.

Two sources: hypothesis feeds arbitrary bytes to every kind of decoder, and
the kernel writes records of random sizes and contents (the ringgen program
copies each test-run packet into a record) into a live stream.
"""

from __future__ import annotations

import itertools
import random

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ringgen import Fixed

import aioringbuf
from aioringbuf import S16, U8, U32, U64, Array, Bytes, CStr, Event, Tail


class Header(Event):
    kind: U8
    flags: S16
    n: U32
    name: CStr[7]
    arr: Array[U32, 2]
    raw: Bytes[3]


class Argv(Event):
    count: U32
    args: Tail[list[str]]


class Text(Event):
    seq: U64
    text: Tail[str]


@settings(max_examples=400, deadline=None)
@given(record=st.binary(max_size=200), kind=st.sampled_from([Header, Argv, Text, None]))
def test_decoder_returns_an_event_or_a_decode_error(record: bytes, kind) -> None:
    try:
        ev = aioringbuf.types.decode(kind, record)
    except aioringbuf.DecodeError:
        if kind is Header:
            assert len(record) != aioringbuf.types.layout_of(Header).size
        return
    if kind is None:
        assert ev == record
    else:
        assert isinstance(ev, kind)
        assert aioringbuf.types.decode(kind, record) == ev  # deterministic



@pytest.mark.anyio
async def test_random_records_from_the_kernel_keep_counters_exact(ringgen_factory) -> None:
    rng = random.Random(20261125)
    gen = ringgen_factory(1 << 20)  # holds all 600 records: no kernel drops
    fits = 0
    async with gen.obj.ring_buffer("events", Fixed) as rb:
        for _ in range(600):
            size = rng.choice([0, 1, 7, 8, 9, 100, 2048, rng.randrange(0, 2049)])
            gen.produce(1, rng.randbytes(size))
            fits += size == 8  # seq + 8 bytes: exactly a Fixed record
        got = []
        with anyio.fail_after(30):
            while rb.stats().delivered + rb.stats().decode_errors < gen.produced():
                with anyio.move_on_after(0.1):  # the last records may all be bad
                    got.append(await rb.receive())
        s = rb.stats()
    assert len(got) == fits == s.delivered
    assert s.decode_errors == 600 - fits
    assert s.kernel_drops == s.queue_drops == 0
    assert all(a.seq < b.seq for a, b in itertools.pairwise(got))
