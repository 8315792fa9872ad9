"""What is particular to the C extension: direct construction, remembered
field values, the cursor's reused awaitable, and the path in use.

The whole suite also runs once per path (AIORINGBUF_PURE=1), and
test_parity.py compares each C twin with its Python one on generated input.
"""

from __future__ import annotations

import itertools
import struct

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    _codec,
    _fast,
)

fastring = pytest.importorskip("aioringbuf._fastring", reason="the C extension is not built")


def both(kind: type):
    """(pure-Python decoder, native decoder) of an Event type, whatever path is in use."""
    return _codec.decoders_for(kind)[0], _codec.native_decoder(kind, fastring.Layout)


class Everything(Event):
    u8: U8
    s8: S8
    u16: U16
    s16: S16
    u32: U32
    s32: S32
    u64: U64
    s64: S64
    name: CStr[7]
    arr: Array[S16, 3]
    raw: Bytes[3]


class PostInit(Event):
    a: U32

    def __post_init__(self) -> None:
        if self.a == 7:
            raise ValueError("seven is refused")


class KwOnly(Event, kw_only=True):
    a: U32


def test_direct_construction_is_used_only_where_it_is_plain() -> None:
    assert both(Everything)[1].direct
    assert not both(PostInit)[1].direct
    assert not both(KwOnly)[1].direct


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1),
                          st.sampled_from([b"bash", b"sh", b"\xff\xfe", b""])),
                max_size=40))
def test_remembered_field_values_never_leak_into_other_records(rows) -> None:
    # pid-like and comm-like fields repeat; the native decoder reuses their
    # objects when the bytes are equal, and must never when they are not.
    class Task(Event):
        cpu: U32
        pid: U32
        comm: CStr[16]

    py, native = both(Task)
    for cpu, pid, comm in rows:
        rec = struct.pack("<II16s", cpu, pid, comm)
        assert native(rec, 0, len(rec)) == py(rec, 0, len(rec))


@pytest.mark.parametrize("base", [_fast.PyCursor, fastring.Cursor], ids=["python", "c"])
@pytest.mark.anyio
async def test_cursors_hand_out_the_batch_then_ask_for_more(base) -> None:
    class Stream(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.refills = 0

        async def _anext_slow(self):
            self.refills += 1
            if self.refills > 2:
                raise StopAsyncIteration
            self._batch = [(self.refills, "tuple values stay whole"), None, self.refills]
            self._nbatch = 3
            self._idx = 1
            return self._batch[0]

        def __aiter__(self):
            return self

    s = Stream()
    s._batch, s._idx, s._nbatch = [], 0, 0
    got = [ev async for ev in s]
    assert got == [(1, "tuple values stay whole"), None, 1, (2, "tuple values stay whole"),
                   None, 2]
    if base is fastring.Cursor:
        # C takes the event when __anext__ is called (a coroutine would when
        # awaited) and reuses its awaitable once released: one still held
        # must keep its own value.
        s._batch, s._idx, s._nbatch = ["a", "b", "c"], 0, 3
        first, second = s.__anext__(), s.__anext__()
        assert await second == "b" and await first == "a"
        assert await s.__anext__() == "c"


@pytest.mark.anyio
async def test_batches_and_single_events_mix_on_a_live_stream(ringgen_factory) -> None:
    gen = ringgen_factory()
    async with gen.obj.ring_buffer("events") as rb:
        gen.produce(10, b"abcdefgh")
        first = await rb.receive()
        rest = []
        with anyio.fail_after(5):
            async for batch in rb.batches():
                rest += batch
                if len(rest) == 9:
                    break
        gen.produce(3, b"abcdefgh")
        more = [await rb.receive() for _ in range(3)]
        s = rb.stats()
    seqs = [int.from_bytes(r[:8], "little") for r in [first, *rest, *more]]
    assert seqs == list(range(13))
    assert s.delivered == 13 and s.queue_len == 0
    assert all(a < b for a, b in itertools.pairwise(seqs))


def test_the_package_uses_the_path_it_reports() -> None:
    cursor = fastring.Cursor if _fast.IMPLEMENTATION == "c" else _fast.PyCursor
    assert issubclass(aioringbuf.RingBuffer, cursor)
    assert issubclass(aioringbuf.PerfBuffer, cursor)
    assert (_fast.walk is fastring.walk) == (_fast.IMPLEMENTATION == "c")
