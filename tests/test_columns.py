"""The columnar walks over rings laid out in user memory, against the record
walks: for any mix of records (right size, discarded, wrong size, busy, lost,
wrapping) they must deliver the same records and account for the same rest."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aioringbuf
from aioringbuf import U8, U16, U32, U64, Array, Bytes, CStr, Event, Tail
from aioringbuf._codec import decoders_for
from aioringbuf._columns import columns_for, perf_take, ring_take
from aioringbuf._perfring import PERF_RECORD_LOST, PERF_RECORD_SAMPLE, walk_perf
from aioringbuf._ring import BUSY_BIT, DISCARD_BIT, record_span, walk

np = pytest.importorskip("numpy")


class Sample(Event):
    seq: U64
    cpu: U32
    comm: CStr[12]


class Odd(Event):
    a: U32
    tag: Bytes[5]


class Tiny(Event):
    v: U16


class WithArray(Event):
    flag: U8
    counts: Array[U32, 3]
    total: U64


class WithTail(Event):
    pid: U32
    argv: Tail[list[str]]


TYPES = [Sample, Odd, Tiny, WithArray]


def test_dtype_mirrors_the_c_layout() -> None:
    dt = aioringbuf.types.dtype_of(WithArray)
    assert dt.names == ("flag", "counts", "total")
    assert dt.itemsize == aioringbuf.types.layout_of(WithArray).size == 24
    assert [dt.fields[n][1] for n in dt.names] == [0, 4, 16]
    assert dt["counts"] == np.dtype(("<u4", (3,)))
    assert dt["total"] == np.dtype("<u8") and dt["flag"] == np.dtype("u1")
    assert aioringbuf.types.dtype_of(Sample)["comm"] == np.dtype("S12")
    assert aioringbuf.types.dtype_of(Odd)["tag"] == np.dtype("S5")


def test_dtype_reads_a_c_struct() -> None:
    raw = struct.pack("<B3xIIIQ", 7, 1, 2, 3, 1 << 40)
    row = np.frombuffer(raw, aioringbuf.types.dtype_of(WithArray))[0]
    assert row["flag"] == 7 and list(row["counts"]) == [1, 2, 3] and row["total"] == 1 << 40


def test_variable_size_types_cannot_be_columns() -> None:
    with pytest.raises(TypeError, match="no fixed size"):
        aioringbuf.types.dtype_of(WithTail)
    with pytest.raises(TypeError, match="raw bytes has no columns"):
        columns_for(None)
    with pytest.raises(TypeError):
        aioringbuf.types.dtype_of(int)


def test_without_numpy_the_error_says_what_to_install(monkeypatch) -> None:
    import sys

    from aioringbuf import _columns

    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy -> ImportError
    monkeypatch.setattr(_columns, "_dtypes", {})
    with pytest.raises(aioringbuf.MissingDependencyError, match=r"aioringbuf\[arrays\]"):
        aioringbuf.types.dtype_of(Sample)


def sample_bytes(tp: type, i: int) -> bytes:
    size = aioringbuf.types.layout_of(tp).size
    return bytes((i * 7 + j) & 0xFF for j in range(size))


def rows_as_events(tp: type, arr) -> list:
    if arr is None:
        return []
    assert arr.dtype == aioringbuf.types.dtype_of(tp)
    py = decoders_for(tp)[0]
    raw = arr.tobytes()
    size = arr.dtype.itemsize
    return [py(raw, i * size, size) for i in range(len(arr))]


def same_result(got, want, kind: str) -> None:
    """A TakeResult against a record walk's result (either of its shapes)."""
    if hasattr(want, "stop"):  # (pos, stop, decode_errors, skipped, error)
        busy = int(want.stop) == 1
        discarded, lost = (want.skipped, 0) if kind == "ring" else (0, want.skipped)
    else:
        busy, discarded, lost = want.busy, want.discarded, want.lost
    assert (got.pos, got.busy, got.discarded, got.decode_errors, got.lost) == (
        want.pos, busy, discarded, want.decode_errors, lost)
    assert type(got.error) is type(want.error) and str(got.error) == str(want.error)


# -- BPF ring buffer --------------------------------------------------------

RING = 256


class FakeRing:
    """A data area of RING bytes at offset 8 of a buffer, mapped twice."""

    BASE = 8

    def __init__(self, start: int) -> None:
        self.buf = bytearray(self.BASE + 2 * RING)
        self.prod = start

    def put(self, sample: bytes, flags: int = 0) -> None:
        rec = struct.pack("<II", len(sample) | flags, 0) + sample
        rec += b"\xee" * (record_span(len(sample)) - len(rec))
        for i, b in enumerate(rec):
            off = self.BASE + (self.prod + i) % RING
            self.buf[off] = self.buf[off + RING] = b
        self.prod += len(rec)


# (kind, detail): a record of the type, a discarded one, one of another size
# (discarded or committed), and at most one busy record.
record = st.one_of(
    st.just(("ok", 0)), st.just(("ok", 0)), st.just(("ok", 0)),
    st.just(("discard", 0)),
    st.tuples(st.just("other"), st.integers(0, 40)),
    st.tuples(st.just("other_discard"), st.integers(0, 40)),
)


@settings(max_examples=300, deadline=None)
@given(tp=st.sampled_from(TYPES), kinds=st.lists(record, max_size=12),
       busy_at=st.integers(-1, 12), start=st.integers(0, 4 * RING),
       budget=st.integers(1, 10), strict=st.booleans())
def test_ring_take_matches_the_walk(tp, kinds, busy_at, start, budget, strict) -> None:
    start &= ~7
    ring = FakeRing(start)
    size = aioringbuf.types.layout_of(tp).size
    for i, (kind, n) in enumerate(kinds):
        if ring.prod - start + record_span(max(size, n)) > RING:
            break
        flags = BUSY_BIT if i == busy_at else 0
        if kind == "ok":
            ring.put(sample_bytes(tp, i), flags)
        elif kind == "discard":
            ring.put(sample_bytes(tp, i), flags | DISCARD_BIT)
        else:
            flags |= DISCARD_BIT if kind == "other_discard" else 0
            ring.put(bytes([i]) * n, flags)
    events: list = []
    py = decoders_for(tp)[0]
    want = walk(ring.buf, ring.BASE, RING - 1, start, ring.prod, budget, py, events, None, strict)
    arr, got = ring_take(ring.buf, ring.BASE, RING - 1, start, ring.prod, budget,
                         columns_for(tp), strict)
    assert rows_as_events(tp, arr) == events
    same_result(got, want, "ring")


def test_a_record_past_the_producer_is_corrupt_for_both_walks() -> None:
    from aioringbuf._ring import RingCorrupt

    ring = FakeRing(0)
    ring.put(sample_bytes(Sample, 0))
    ring.put(bytes(100))
    prod = ring.prod - 8  # the second record runs past what was published
    with pytest.raises(RingCorrupt):
        walk(ring.buf, ring.BASE, RING - 1, 0, prod, 10, decoders_for(Sample)[0], [], None, False)
    with pytest.raises(RingCorrupt, match="past the producer position"):
        ring_take(ring.buf, ring.BASE, RING - 1, 0, prod, 10, columns_for(Sample), False)


def test_ring_take_is_one_block_for_a_wrapping_span() -> None:
    ring = FakeRing(RING - 40)  # the third record runs past the end of the first mapping
    for i in range(6):
        ring.put(sample_bytes(Sample, i))
    arr, res = ring_take(ring.buf, ring.BASE, RING - 1, RING - 40, ring.prod, 100,
                         columns_for(Sample), False)
    assert rows_as_events(Sample, arr) == [decoders_for(Sample)[0](sample_bytes(Sample, i), 0, 24)
                                           for i in range(6)]
    assert res.pos == ring.prod
    assert not np.shares_memory(arr, np.frombuffer(ring.buf, np.uint8))  # a copy


def test_ring_take_leaves_no_view_on_the_buffer() -> None:
    import mmap

    m = mmap.mmap(-1, FakeRing.BASE + 2 * RING)
    ring = FakeRing(0)
    for i in range(3):
        ring.put(sample_bytes(Sample, i), DISCARD_BIT if i == 1 else 0)
    m[:] = ring.buf
    arr, _ = ring_take(m, ring.BASE, RING - 1, 0, ring.prod, 100, columns_for(Sample), False)
    assert len(arr) == 2
    m.close()  # BufferError if a view were still exported


# -- perf ring ---------------------------------------------------------------

PERF = 256


class FakePerfRing:
    """A perf data area of PERF bytes at offset 16 of a buffer, mapped once."""

    BASE = 16

    def __init__(self, start: int) -> None:
        self.buf = bytearray(self.BASE + PERF)
        self.head = start

    def _write(self, rec: bytes) -> None:
        for i, b in enumerate(rec):
            self.buf[self.BASE + (self.head + i) % PERF] = b
        self.head += len(rec)

    def sample(self, sample: bytes) -> None:
        raw = ((len(sample) + 4 + 7) & ~7) - 4
        body = struct.pack("<I", raw) + sample + b"\xee" * (raw - len(sample))
        self._write(struct.pack("<IHH", PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body)

    def lost(self, n: int) -> None:
        self._write(struct.pack("<IHHQQ", PERF_RECORD_LOST, 0, 24, 1, n))

    def other(self) -> None:
        self._write(struct.pack("<IHHQ", 3, 0, 16, 0))


perf_record = st.one_of(
    st.just(("ok", 0)), st.just(("ok", 0)), st.just(("ok", 0)),
    st.tuples(st.just("other_size"), st.integers(0, 40)),
    st.tuples(st.just("lost"), st.integers(1, 1000)),
    st.just(("other", 0)),
)


@settings(max_examples=300, deadline=None)
@given(tp=st.sampled_from(TYPES), kinds=st.lists(perf_record, max_size=12),
       start=st.integers(0, 4 * PERF), budget=st.integers(1, 10), strict=st.booleans())
def test_perf_take_matches_the_walk(tp, kinds, start, budget, strict) -> None:
    start &= ~7
    ring = FakePerfRing(start)
    size = aioringbuf.types.layout_of(tp).size
    for i, (kind, n) in enumerate(kinds):
        if ring.head - start + 24 + max(size, n) > PERF:
            break
        if kind == "ok":
            ring.sample(sample_bytes(tp, i))
        elif kind == "other_size":
            ring.sample(bytes([i]) * n)
        elif kind == "lost":
            ring.lost(n)
        else:
            ring.other()
    events: list = []
    py = decoders_for(tp)[0]
    want = walk_perf(ring.buf, ring.BASE, PERF, start, ring.head, budget, py, events, None,
                     strict, size)
    arr, got = perf_take(ring.buf, ring.BASE, PERF, start, ring.head, budget,
                         columns_for(tp), strict)
    assert rows_as_events(tp, arr) == events
    same_result(got, want, "perf")


@pytest.mark.parametrize("tp", TYPES)
def test_from_events_round_trips(tp) -> None:
    py = decoders_for(tp)[0]
    size = aioringbuf.types.layout_of(tp).size
    events = [py(sample_bytes(tp, i), 0, size) for i in range(5)]
    arr = columns_for(tp).from_events(events)
    assert rows_as_events(tp, arr) == events
    assert len(columns_for(tp).from_events([])) == 0


def test_a_record_committed_while_it_is_read_is_never_a_decode_error(monkeypatch) -> None:
    # The producer commits a busy record between two loads of its header:
    # ring_take must judge it on one load (busy: taken next time), never
    # count it as a record of another size. Here the commit lands just
    # before the header read that follows the block's copy of the headers.
    from aioringbuf import _columns

    ring = FakeRing(0)
    ring.put(sample_bytes(Sample, 0), BUSY_BIT)
    ring.put(sample_bytes(Sample, 1))
    real = _columns._u32

    def committing_read(data, off):
        for at in (ring.BASE + 3, ring.BASE + RING + 3):  # the busy bit: bit 31
            ring.buf[at] &= 0x7F
        return real(data, off)

    monkeypatch.setattr(_columns, "_u32", committing_read)
    cols = columns_for(Sample)
    arr, res = ring_take(ring.buf, ring.BASE, RING - 1, 0, ring.prod, 10, cols, False)
    assert (arr, res.pos, res.busy, res.decode_errors) == (None, 0, True, 0)
    for at in (ring.BASE + 3, ring.BASE + RING + 3):  # committed now, whoever read it
        ring.buf[at] &= 0x7F
    arr, res = ring_take(ring.buf, ring.BASE, RING - 1, 0, ring.prod, 10, cols, False)
    assert res.decode_errors == 0 and res.pos == ring.prod
    assert rows_as_events(Sample, arr) == [decoders_for(Sample)[0](sample_bytes(Sample, i), 0, 24)
                                           for i in range(2)]
