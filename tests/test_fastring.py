"""The C extension against the pure-Python reference, on the same inputs.

The whole suite also runs once per path (AIORINGBUF_PURE=1); these tests
put both side by side in one process: decoders on arbitrary bytes, the two
record walks on rings laid out in user memory, and the stream cursor.
"""

from __future__ import annotations

import array
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
    Tail,
    _codec,
    _fast,
    _perfring,
    _ring,
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


class WithBytes(Event):
    kind: U32
    data: Tail[bytes]


class WithStr(Event):
    kind: U16
    text: Tail[str]


class WithList(Event):
    n: U8
    items: Tail[list[str]]


class PostInit(Event):
    a: U32

    def __post_init__(self) -> None:
        if self.a == 7:
            raise ValueError("seven is refused")


class KwOnly(Event, kw_only=True):
    a: U32


TYPES = [Everything, WithBytes, WithStr, WithList, PostInit, KwOnly]


def outcome(decode, record: bytes, off: int = 0):
    try:
        return ("ok", decode(record, off, len(record) - off))
    except Exception as exc:  # the same kind of error, saying the same thing
        return ("error", type(exc), str(exc))


def test_direct_construction_is_used_only_where_it_is_plain() -> None:
    assert both(Everything)[1].direct
    assert not both(PostInit)[1].direct
    assert not both(KwOnly)[1].direct


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(TYPES), record=st.binary(max_size=120), prefix=st.binary(max_size=9))
def test_native_decoders_match_the_python_ones(kind, record: bytes, prefix: bytes) -> None:
    py, native = both(kind)
    if kind is Everything and len(record) > 8:
        record = record[: _codec.layout_of(kind).size]  # hit the exact size often
    data = prefix + record
    assert outcome(native, data, len(prefix)) == outcome(py, data, len(prefix))


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


SIZE = 256


def ring_with(records: list[tuple[bytes, int]]) -> tuple[bytearray, int]:
    """A ring buffer data area, mapped twice, holding ``records`` (sample, flags)."""
    buf = bytearray(2 * SIZE)
    pos = 0
    for sample, flags in records:
        rec = struct.pack("<II", len(sample) | flags, 0) + sample
        rec += bytes(_ring.record_span(len(sample)) - len(rec))
        for i, b in enumerate(rec):
            off = (pos + i) % SIZE
            buf[off] = buf[off + SIZE] = b
        pos += len(rec)
    return buf, pos


class Fixed(Event):
    seq: U64


def fussy(buf, off, n):
    """A Python decoder that refuses some records (to exercise errors both ways)."""
    if n == 3:
        raise ValueError("three bytes are refused")
    return bytes(buf[off : off + n])


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.tuples(st.binary(max_size=20),
                               st.sampled_from([0, 0, 0, _ring.DISCARD_BIT, _ring.BUSY_BIT])),
                     max_size=10),
    start=st.integers(0, SIZE // 8 - 1),
    budget=st.integers(1, 12),
    strict=st.booleans(),
    kind=st.sampled_from(["bytes", "fussy", "fixed"]),
)
def test_ring_walks_match(records, start, budget, strict, kind) -> None:
    buf, end = ring_with(records)
    # Rotate so that the first record sits at a chosen offset (and wraps).
    shift = start * 8
    rot = bytearray(2 * SIZE)
    for i in range(SIZE):
        rot[(i + shift) % SIZE] = rot[(i + shift) % SIZE + SIZE] = buf[i]
    decode = {"bytes": _codec.decoder_for(None), "fussy": fussy}.get(kind)
    results = []
    for walk, dec, starts in [
        (_ring.walk, decode or both(Fixed)[0], []),
        (fastring.walk, decode or both(Fixed)[1], []),
        (fastring.walk, decode or both(Fixed)[1], array.array("Q")),
    ]:
        events: list = []
        res = walk(rot, 0, SIZE - 1, shift, shift + end, budget, dec, events, starts, strict)
        pos, stop, errors, discarded, error = res
        results.append((events, list(starts), pos, stop, errors, discarded,
                        None if error is None else (type(error), str(error))))
    assert results[0] == results[1] == results[2]


PERF = 128


def perf_ring_with(records: list[tuple[int, bytes]], start: int) -> tuple[bytearray, int]:
    """A perf data area (mapped once) with ``records`` (type, body) from ``start``."""
    buf = bytearray(PERF)
    pos = start
    for rtype, body in records:
        size = 8 + len(body)
        rec = struct.pack("<IHH", rtype, 0, size) + body
        for i, b in enumerate(rec):
            buf[(pos + i) % PERF] = b
        pos += size
    return buf, pos


def sample(payload: bytes) -> tuple[int, bytes]:
    raw = struct.pack("<I", _perfring.padded_raw_size(len(payload))) + payload
    raw += bytes(-len(raw) % 8)
    return (_perfring.PERF_RECORD_SAMPLE, raw)


def lost(n: int) -> tuple[int, bytes]:
    return (_perfring.PERF_RECORD_LOST, struct.pack("<QQ", 0, n))


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.one_of(st.binary(max_size=20).map(sample), st.integers(1, 99).map(lost),
                             st.just((17, bytes(8)))), max_size=5),
    start=st.integers(0, PERF // 8 - 1),
    budget=st.integers(1, 6),
    strict=st.booleans(),
    kind=st.sampled_from(["bytes", "fussy", "fixed"]),
)
def test_perf_walks_match(items, start, budget, strict, kind) -> None:
    total = sum(8 + len(body) for _, body in items)
    if total >= PERF:
        items = items[:1]
    buf, head = perf_ring_with(items, start * 8)
    decode = {"bytes": _codec.decoder_for(None), "fussy": fussy}.get(kind)
    exact = 8 if kind == "fixed" else -1
    results = []
    for walk, dec in [(_perfring.walk_perf, decode or both(Fixed)[0]),
                      (fastring.walk_perf, decode or both(Fixed)[1])]:
        events: list = []
        starts: list = []
        pos, stop, errors, n_lost, error = walk(
            buf, 0, PERF, start * 8, head, budget, dec, events, starts, strict, exact)
        results.append((events, starts, pos, stop, errors, n_lost,
                        None if error is None else (type(error), str(error))))
    assert results[0] == results[1]


@pytest.mark.parametrize("walk", [_perfring.walk_perf, fastring.walk_perf])
def test_a_corrupt_perf_header_is_fatal_in_both(walk) -> None:
    buf = bytearray(PERF)
    struct.pack_into("<IHH", buf, 0, _perfring.PERF_RECORD_SAMPLE, 0, 3)  # size 3: impossible
    with pytest.raises(_perfring.PerfRingCorrupt, match="corrupt"):
        walk(buf, 0, PERF, 0, 8, 10, _codec.decoder_for(None), [], None, False)


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
