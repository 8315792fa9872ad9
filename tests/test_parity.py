"""The C twins against the pure-Python ones, on the same bytes, malformed included.

Each C source of aioringbuf._fastring is a drop-in for a named Python
twin (aioringbuf/_c/*.c say which). Here both run side by side in one
process on generated input — well-formed records and the ones a kernel
bug, a stale mapping or a hostile decoder could produce: short, oversized
and zero-length records, lengths that run past the producer position,
truncated LOST records, 8-byte SAMPLEs, BUSY and DISCARD mixes, records
that wrap, and plain random bytes — and must return the same results or
raise the same exception with the same message.

It needs the extension built (CI builds it; AIORINGBUF_REQUIRE_C=1 fails
the run if it was not), and runs in both of CI's runs: AIORINGBUF_PURE=1
only changes which twin the package uses, not what this file imports.
"""

from __future__ import annotations

import array
import struct
from typing import Any

import anyio
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

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


def both(kind: type) -> tuple[Any, Any]:
    """(pure-Python decoder, native decoder) of an Event type, whatever path is in use."""
    return _codec.decoders_for(kind)[0], _codec.native_decoder(kind, fastring.Layout)


def failure(exc: BaseException) -> tuple[str, type, str]:
    return ("raised", type(exc), str(exc))


# -- the codec: _codec's generated decoders vs codec.c's Layout --------------


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


def decoded(decode: Any, record: bytes, off: int = 0) -> Any:
    try:
        return ("ok", decode(record, off, len(record) - off))
    except Exception as exc:  # the same kind of error, saying the same thing
        return failure(exc)


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(TYPES), record=st.binary(max_size=120), prefix=st.binary(max_size=9))
def test_native_decoders_match_the_python_ones(kind, record: bytes, prefix: bytes) -> None:
    py, native = both(kind)
    if kind is Everything and len(record) > 8:
        record = record[: _codec.layout_of(kind).size]  # hit the exact size often
    data = prefix + record
    assert decoded(native, data, len(prefix)) == decoded(py, data, len(prefix))


# -- decoders the walks are given ---------------------------------------------


class Fixed(Event):
    seq: U64


class Halt(BaseException):
    """Not an Exception: a walk must let it through, not count it."""


def fussy(buf: Any, off: int, n: int) -> bytes:
    """A Python decoder that refuses some records (to exercise errors both ways)."""
    if n == 3:
        raise ValueError("three bytes are refused")
    if n == 13:
        raise Halt("thirteen stops everything")
    return bytes(buf[off : off + n])


def decoders(kind: str) -> list[tuple[str, Any, Any]]:
    """(label, decoder for the Python walk, decoder for the C walk) pairs."""
    # A generated decoder carries a ring walk with it inlined (ring_walk,
    # _ring.specialized_walk), which _ring.walk runs instead of itself; a
    # plain wrapper around the decoder makes it take its own loop.
    if kind == "fixed":
        py, native = both(Fixed)
        assert py.ring_walk is not None
        return [("fixed", py, native), ("fixed/python-in-c", py, py),
                ("fixed/unspecialized", lambda *a: py(*a), native)]
    if kind == "tail":
        py, native = both(WithBytes)
        return [("tail", py, native), ("tail/unspecialized", lambda *a: py(*a), native)]
    plain = fussy if kind == "fussy" else _codec.decoder_for(None)
    return [(kind, plain, plain)]


KINDS = st.sampled_from(["bytes", "fussy", "fixed", "tail"])


def compare_walks(py_walk: Any, c_walk: Any, head: tuple, strict: bool, kind: str,
                  tail: tuple = ()) -> None:
    """Run both walks with every decoder pairing of ``kind``; all must agree."""
    for label, py_dec, c_dec in decoders(kind):
        got = []
        for walk, dec, starts in [(py_walk, py_dec, []), (c_walk, c_dec, []),
                                  (c_walk, c_dec, array.array("Q"))]:
            events: list[Any] = []
            try:
                pos, stop, errors, skipped, error = walk(*head, dec, events, starts, strict,
                                                         *tail)
                out: Any = (pos, int(stop), errors, skipped,
                            None if error is None else failure(error))
                kept = list(starts)
            except BaseException as exc:
                out = failure(exc)
                # C hands an array('Q') its starts at the end: none after a raise.
                kept = list(starts) if isinstance(starts, list) else None
            got.append((out, events, kept))
        out = got[0][0]
        event(out[1].__name__ if out[0] == "raised" else
              f"{_ring.Stop(out[1]).name}{', decode error' if out[4] else ''}")
        assert got[0] == got[1], label
        assert got[2][:2] == got[0][:2], label
        if got[2][2] is not None:
            assert got[2][2] == got[0][2], label


# -- BPF ring buffer walks: _ring.walk vs walk.c walk() -------------------------

SIZE = 256  # the data area; the buffer holds it twice, like the kernel's mapping

RING_FLAGS = st.sampled_from([0, 0, 0, _ring.DISCARD_BIT, _ring.BUSY_BIT,
                              _ring.BUSY_BIT | _ring.DISCARD_BIT])
RING_ITEMS = st.one_of(
    # a record as the kernel writes it (zero-length included)
    st.tuples(st.just("record"), st.binary(max_size=40), RING_FLAGS),
    # a header whose length is anything at all, then nothing behind it
    st.tuples(st.just("header"), st.integers(0, (1 << 30) - 1), RING_FLAGS),
)


def mirrored(data: bytes | bytearray) -> bytearray:
    return bytearray(data) + bytearray(data)


def ring_from(items: list[tuple], shift: int, size: int = SIZE) -> tuple[bytearray, int]:
    """A ring data area holding ``items`` from position ``shift``: (buffer, end)."""
    area = bytearray(size)
    pos = shift
    for what, body, flags in items:
        if what == "record":
            rec = struct.pack("<II", len(body) | flags, 0) + body
            rec += bytes(_ring.record_span(len(body)) - len(rec))
        else:
            rec = struct.pack("<II", body | flags, 0)
        if pos - shift + len(rec) > size - 8:
            break  # keep to one ring's worth, as the kernel does
        for i, b in enumerate(rec):
            area[(pos + i) % size] = b
        pos += len(rec)
    return mirrored(area), pos


@pytest.mark.timeout(240)  # a few thousand walks: slow on a loaded machine
@settings(max_examples=1500, deadline=None)
@given(
    items=st.lists(RING_ITEMS, max_size=10),
    shift=st.integers(0, SIZE // 8 - 1).map(lambda k: k * 8),
    cut=st.integers(-16, 0).map(lambda k: k * 4),
    budget=st.integers(0, 12),
    strict=st.booleans(),
    kind=KINDS,
)
def test_ring_walks_match_on_well_formed_and_malformed_records(
        items, shift, cut, budget, strict, kind) -> None:
    buf, end = ring_from(items, shift)
    prod = max(shift, end + cut)  # sometimes in the middle of a record: it runs past prod
    compare_walks(_ring.walk, fastring.walk, (buf, 0, SIZE - 1, shift, prod, budget),
                  strict, kind)


@pytest.mark.timeout(240)  # a few thousand walks: slow on a loaded machine
@settings(max_examples=800, deadline=None)
@given(
    area=st.binary(min_size=SIZE, max_size=SIZE),
    cons=st.integers(0, SIZE // 8 - 1).map(lambda k: k * 8),
    length=st.integers(0, SIZE // 8).map(lambda k: k * 8),
    budget=st.integers(0, 40),
    strict=st.booleans(),
    kind=KINDS,
)
def test_ring_walks_match_on_random_bytes(area, cons, length, budget, strict, kind) -> None:
    compare_walks(_ring.walk, fastring.walk,
                  (mirrored(area), 0, SIZE - 1, cons + 3 * SIZE, cons + 3 * SIZE + length,
                   budget), strict, kind)


# Runs of records of the one size a fixed layout takes, which the Python
# walk made for it reads as blocks (_ring._BLOCK): long runs, broken by a
# discard, a BUSY record, a record of another size or the producer position
# (in the middle of a record, too), cut by the budget, wrapping through the
# double mapping.


class Padded(Event):
    """Padding inside and at the end: 24 bytes, a 32-byte span in the ring."""

    a: U8
    b: U64
    c: S16
    raw: Bytes[3]


RUNS_SIZE = 4096
RUN_KINDS = {"fixed": Fixed, "padded": Padded, "post-init": PostInit, "kw-only": KwOnly}


def run_decoders(kind: str) -> list[tuple[str, Any, Any]]:
    if kind == "fixed":
        return decoders("fixed")
    py, native = both(RUN_KINDS[kind])
    return [(kind, py, native), (f"{kind}/unspecialized", lambda *a: py(*a), native)]


@st.composite
def runs(draw: Any, size: int) -> list[tuple]:
    """Items for ring_from: runs of ``size``-byte records, and odd ones between."""
    items: list[tuple] = []
    for _ in range(draw(st.integers(0, 6))):
        count = draw(st.integers(0, 70))
        body = draw(st.binary(min_size=size, max_size=size))
        items += [("record", body[i % size:] + body[:i % size], 0) for i in range(count)]
        items += draw(st.lists(st.one_of(
            st.tuples(st.just("record"), st.binary(min_size=size, max_size=size), RING_FLAGS),
            RING_ITEMS), max_size=2))
    return items


def compare_run_walks(kind: str, head: tuple, strict: bool) -> None:
    for label, py_dec, c_dec in run_decoders(kind):
        got = []
        for walk, dec in [(_ring.walk, py_dec), (fastring.walk, c_dec)]:
            events: list[Any] = []
            starts = array.array("Q")
            try:
                pos, stop, errors, skipped, error = walk(*head, dec, events, starts, strict)
                out: Any = (pos, int(stop), errors, skipped,
                            None if error is None else failure(error))
            except BaseException as exc:
                out, starts = failure(exc), None
            got.append((out, events, starts))
        assert got[0][:2] == got[1][:2], label
        if got[1][2] is not None:  # C hands an array its starts at the end: none after a raise
            assert got[0][2] == got[1][2], label


@pytest.mark.timeout(240)  # a few thousand walks: slow on a loaded machine
@settings(max_examples=500, deadline=None)
@given(
    data=st.data(),
    kind=st.sampled_from(sorted(RUN_KINDS)),
    shift=st.integers(0, RUNS_SIZE // 8 - 1).map(lambda k: k * 8),
    cut=st.integers(-16, 0).map(lambda k: k * 4),
    budget=st.one_of(st.integers(0, 12), st.integers(0, 300)),
    strict=st.booleans(),
)
def test_ring_walks_match_on_runs_of_fixed_records(data, kind, shift, cut, budget,
                                                    strict) -> None:
    size = _codec.layout_of(RUN_KINDS[kind]).size
    buf, end = ring_from(data.draw(runs(size)), shift, RUNS_SIZE)
    prod = max(shift, end + cut)
    compare_run_walks(kind, (buf, 0, RUNS_SIZE - 1, shift, prod, budget), strict)


def test_a_long_run_is_read_whole_and_a_busy_record_ends_it() -> None:
    """Deterministic: 300 records, the 200th BUSY; then with it committed."""
    size = _codec.layout_of(Padded).size
    body = bytes(range(size))
    items = [("record", body[i % 7:] + body[:i % 7], 0) for i in range(300)]
    items[199] = ("record", body, _ring.BUSY_BIT)
    for busy in (True, False):
        if not busy:
            items[199] = ("record", body, 0)
        buf, end = ring_from(items, RUNS_SIZE - 64, 16384)
        for budget in (1000, 150, 7):
            compare_run_walks("padded", (buf, 0, 16383, RUNS_SIZE - 64, end, budget), False)
        events: list[Any] = []
        res = _codec.decoders_for(Padded)[0].ring_walk(
            buf, 0, 16383, RUNS_SIZE - 64, end, 1000, None, events, None, False)
        assert len(events) == (199 if busy else 300)
        assert res[1] == (_ring.Stop.BUSY if busy else _ring.Stop.EMPTY)
        assert events[5] == Padded(*struct.unpack("<B7xQh3s3x", body[5:] + body[:5]))


def test_a_record_running_past_the_producer_position_is_corrupt_in_both() -> None:
    buf, _ = ring_from([("header", 100, 0)], 0)
    for walk in (_ring.walk, fastring.walk):
        with pytest.raises(_ring.RingCorrupt, match="claims 100 bytes, past the producer"):
            walk(buf, 0, SIZE - 1, 0, 64, 10, _codec.decoder_for(None), [], None, False)


# -- perf ring walks: _perfring.walk_perf vs walk.c walk_perf() -----------------

PERF = 128  # one perf data area, mapped once

SAMPLE, LOST = _perfring.PERF_RECORD_SAMPLE, _perfring.PERF_RECORD_LOST


def sample(payload: bytes, claim: int | None = None) -> tuple[int, int, bytes]:
    """A SAMPLE as bpf_perf_event_output writes it (raw size padded), or one
    whose raw size claims ``claim`` bytes whatever follows."""
    n = _perfring.padded_raw_size(len(payload)) if claim is None else claim
    raw = struct.pack("<I", n) + payload
    raw += bytes(-(len(raw) + 8) % 8)
    return (SAMPLE, 8 + len(raw), raw)


PERF_ITEMS = st.one_of(
    st.binary(max_size=40).map(sample),
    st.tuples(st.binary(max_size=24), st.integers(0, 64)).map(lambda t: sample(*t)),
    st.integers(0, 1 << 40).map(lambda n: (LOST, 24, struct.pack("<QQ", 7, n))),
    # truncated LOST records: the lost count would lie past the record
    st.sampled_from([0, 8]).map(lambda k: (LOST, 8 + k, struct.pack("<Q", 99)[:k])),
    st.just((SAMPLE, 8, b"")),  # an 8-byte SAMPLE: no room for its raw size
    st.integers(0, 3).map(lambda k: (17, 8 + 8 * k, bytes(8 * k))),  # a type nobody asked for
    # a bare header with any size at all (0, unaligned, past data_head, past the ring)
    st.tuples(st.sampled_from([SAMPLE, LOST, 17]), st.integers(0, 0xFFFF))
    .map(lambda t: (t[0], t[1], b"")),
)


def perf_from(items: list[tuple[int, int, bytes]], start: int) -> tuple[bytearray, int]:
    """A perf data area holding ``items`` (type, header size, body) from ``start``."""
    area = bytearray(PERF)
    pos = start
    for rtype, size, body in items:
        rec = struct.pack("<IHH", rtype, 0, size) + body
        if pos - start + max(len(rec), 8) > PERF - 8:
            break
        for i, b in enumerate(rec):
            area[(pos + i) % PERF] = b
        pos += (len(rec) + 7) & ~7
    return area, pos


@pytest.mark.timeout(240)  # a few thousand walks: slow on a loaded machine
@settings(max_examples=1500, deadline=None)
@given(
    items=st.lists(PERF_ITEMS, max_size=6),
    start=st.integers(0, PERF // 8 - 1).map(lambda k: k * 8),
    cut=st.integers(-4, 0).map(lambda k: k * 8),
    budget=st.integers(0, 8),
    strict=st.booleans(),
    kind=KINDS,
    exact=st.sampled_from([-1, 8]),
)
def test_perf_walks_match_on_well_formed_and_malformed_records(
        items, start, cut, budget, strict, kind, exact) -> None:
    buf, end = perf_from(items, start)
    head = max(start, end + cut)
    compare_walks(_perfring.walk_perf, fastring.walk_perf,
                  (buf, 0, PERF, start, head, budget), strict, kind, (exact,))


@pytest.mark.timeout(240)  # a few thousand walks: slow on a loaded machine
@settings(max_examples=800, deadline=None)
@given(
    area=st.binary(min_size=PERF, max_size=PERF),
    tail=st.integers(0, PERF // 8 - 1).map(lambda k: k * 8),
    length=st.integers(0, PERF // 8).map(lambda k: k * 8),
    budget=st.integers(0, 20),
    strict=st.booleans(),
    kind=KINDS,
)
def test_perf_walks_match_on_random_bytes(area, tail, length, budget, strict, kind) -> None:
    compare_walks(_perfring.walk_perf, fastring.walk_perf,
                  (bytearray(area), 0, PERF, tail + PERF, tail + PERF + length, budget),
                  strict, kind, (8,))


@pytest.mark.parametrize("walk", [_perfring.walk_perf, fastring.walk_perf],
                         ids=["python", "c"])
@pytest.mark.parametrize(("rtype", "size", "message"), [
    (SAMPLE, 8, "too short for its raw size"),  # C skipped these silently
    (LOST, 8, "less than 24"),  # Python read a loss count past the record
    (LOST, 16, "less than 24"),
])
def test_records_too_short_for_their_type_are_corrupt_in_both(walk, rtype, size,
                                                              message) -> None:
    buf, head = perf_from([(rtype, size, bytes(size - 8)), sample(b"next")], 0)
    buf[size : size + 8] = struct.pack("<Q", 4503599627370505)  # what Python used to read
    events: list[Any] = []
    with pytest.raises(_perfring.PerfRingCorrupt, match=message):
        walk(buf, 0, PERF, 0, head, 10, _codec.decoder_for(None), events, None, False)
    assert events == []


# -- the cursor: _fast.PyCursor vs cursor.c Cursor -----------------------------

VALUES = st.one_of(st.integers(), st.none(), st.tuples(st.integers(), st.text(max_size=3)))


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(VALUES, max_size=5), max_size=6),
       ending=st.sampled_from(["end", "error"]))
def test_cursors_deliver_the_same_events_and_endings(batches, ending) -> None:
    """The same refills give the same events, in order, then the same ending.

    (Each __anext__ awaited before the next is called, as ``async for`` does:
    two calls in flight at once are where the twins may differ, C taking the
    event at the call and a coroutine when awaited; see test_fastring.py.)
    """

    def stream_on(base: type) -> Any:
        class Stream(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__()
                self.left = list(batches)

            async def _anext_slow(self) -> Any:
                while self.left:
                    batch = self.left.pop(0)
                    if batch:
                        self._batch, self._idx, self._nbatch = batch, 1, len(batch)
                        return batch[0]
                if ending == "error":
                    raise ValueError("the ring went away")
                raise StopAsyncIteration

        return Stream()

    async def drive(base: type) -> list[Any]:
        s = stream_on(base)
        seen: list[Any] = []
        try:
            while True:
                seen.append(await s.__anext__())
        except (StopAsyncIteration, ValueError) as exc:
            seen.append(failure(exc))
        return seen

    results = [anyio.run(drive, base) for base in (_fast.PyCursor, fastring.Cursor)]
    assert results[0] == results[1]
    assert results[0][:-1] == [v for b in batches for v in b]
