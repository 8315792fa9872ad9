"""Records as columns: one numpy structured array per drained span.

People who count, aggregate or store high-rate events want columns, not
one Python object per record. A fixed-size Event type has a C layout that
numpy can describe (:func:`dtype_of`), and the ring holds its records at a
fixed stride, so a whole span is read with one strided block copy:

* a BPF ring buffer's data area is mapped twice, so any span of records is
  contiguous: a view of ``n`` records whose itemsize is the record stride
  (the 8-byte header skipped as padding) is copied out at once;
* a perf ring is mapped once, so a span is copied in segments that end
  where the ring wraps (the record across the end is assembled from its
  two pieces) or at a ``PERF_RECORD_LOST``.

The walks here are pure functions over (buffer, positions) with exactly the
accounting of ``_ring.walk`` and ``_perfring.walk_perf`` (delivered,
discarded, decode errors, lost, where and why they stopped), so that
``stream.arrays()`` can be mixed with ``async for`` and ``batches()``.
numpy is optional (``pip install aioringbuf[arrays]``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, NamedTuple

from ._codec import (
    _CArray,
    _compile,
    _CString,
    _meta_of,
    _RawBytes,
    _Scalar,
    _type_hints,
    decoders_for,
    layout_of,
)
from ._errors import MissingDependencyError
from ._perfring import (
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    RAW_OFFSET,
    PerfRingCorrupt,
    padded_raw_size,
)
from ._ring import BUSY_BIT, DISCARD_BIT, HEADER_SIZE, RingCorrupt, record_span

if TYPE_CHECKING:
    import numpy as np

_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_perf_header = struct.Struct("<IHH").unpack_from


class TakeResult(NamedTuple):
    """Where a columnar walk stopped and what it passed: the facts of the
    record walks' result, by name (its own type, so that it does not follow
    every change of theirs)."""

    pos: int  # the position after the last record consumed
    busy: bool = False  # stopped at a BUSY record
    discarded: int = 0
    decode_errors: int = 0
    error: BaseException | None = None  # set only when strict
    lost: int = 0  # perf rings: samples PERF_RECORD_LOST records reported


def numpy() -> Any:
    """The numpy module, or a MissingDependencyError that says how to get it."""
    try:
        import numpy
    except ImportError as exc:
        raise MissingDependencyError(
            "columnar batches (stream.arrays(), aioringbuf.dtype_of) need numpy: "
            "pip install 'aioringbuf[arrays]'"
        ) from exc
    return numpy


def _format(meta: Any) -> Any:
    if isinstance(meta, _Scalar):
        return _SCALARS[meta.code]
    if isinstance(meta, _CArray):
        return (_SCALARS[meta.elem.code], (meta.count,))
    if isinstance(meta, (_CString, _RawBytes)):
        return f"S{meta.length}"
    return None


_SCALARS = {"B": "u1", "H": "<u2", "I": "<u4", "Q": "<u8",
            "b": "i1", "h": "<i2", "i": "<i4", "q": "<i8"}

_dtypes: dict[type, Any] = {}


def dtype_of(event_type: type) -> np.dtype[Any]:
    """The numpy structured dtype of ``event_type``'s C layout.

    Field names, offsets and itemsize are those of the C struct
    (``layout_of``): integers as little-endian ``u1..u8``/``i1..i8``,
    ``CStr[n]`` and ``Bytes[n]`` as ``S{n}`` (the raw bytes: numpy hides
    trailing NULs when you read an item), ``Array[U32, n]`` as a ``(n,)``
    subarray. A variable-size type (``Tail[...]``) has no fixed stride and
    cannot be columns: TypeError.
    """
    hit = _dtypes.get(event_type)
    if hit is not None:
        return hit
    np_ = numpy()
    layout = layout_of(event_type)  # EventLayoutError (a TypeError) for non-Events
    if layout.has_tail or getattr(event_type, "__aioringbuf_decoder__", None) is not None:
        what = "a Tail[...] field" if layout.has_tail else "its own decoder"
        raise TypeError(
            f"{event_type.__name__} has {what}: its records have no fixed size, so they "
            "cannot be columns; iterate it with `async for` or batches(), or declare the "
            "variable part as a fixed field (CStr[n], Bytes[n])"
        )
    hints = _type_hints(event_type)
    names, formats, offsets = [], [], []
    for name, off in layout.offsets.items():
        names.append(name)
        formats.append(_format(_meta_of(hints[name])))
        offsets.append(off)
    dt = np_.dtype({"names": names, "formats": formats, "offsets": offsets,
                    "itemsize": layout.size})
    _dtypes[event_type] = dt
    return dt


class Columns:
    """What the columnar walks need to know about one fixed-size Event type."""

    def __init__(self, event_type: type) -> None:
        np_ = numpy()
        self.np = np_
        self.event_type = event_type
        self.dtype = dtype_of(event_type)
        self.size = self.dtype.itemsize  # sizeof(struct)
        self.decode = decoders_for(event_type)[0]  # for its exact RecordSizeError
        _compile(event_type)
        # BPF ring buffer: header word at 0, the struct at 8, a stride per record.
        self.stride = record_span(self.size)
        self.ring_header = np_.dtype({"names": ["len"], "formats": ["<u4"],
                                      "offsets": [0], "itemsize": self.stride})
        # The struct as opaque bytes: numpy copies a void item with one memcpy
        # (a structured one field by field, several times slower); the copy
        # is then viewed as the C layout.
        self.ring_record = np_.dtype({"names": ["rec"], "formats": [f"V{self.size}"],
                                      "offsets": [HEADER_SIZE], "itemsize": self.stride})
        # Perf ring: perf_event_header, u32 raw size, the struct, the kernel's padding.
        self.padded = padded_raw_size(self.size)
        self.perf_stride = RAW_OFFSET + self.padded
        self.perf_header = np_.dtype({"names": ["type", "size", "raw"],
                                      "formats": ["<u4", "<u2", "<u4"],
                                      "offsets": [0, 6, 8], "itemsize": self.perf_stride})
        self.perf_record = np_.dtype({"names": ["rec"], "formats": [f"V{self.size}"],
                                      "offsets": [RAW_OFFSET], "itemsize": self.perf_stride})
        self.raw = np_.dtype(f"V{self.size}")
        self._good = self.size
        self._discard = self.size | DISCARD_BIT

    def concat(self, pieces: list[Any]) -> Any:
        """Pieces of raw structs (``V{size}`` items, maybe strided) as one array."""
        if len(pieces) == 1:
            return pieces[0].view(self.dtype)
        return self.np.concatenate(pieces).view(self.dtype)

    def from_events(self, events: list[Any]) -> Any:
        """Decoded events back to their C layout (for streams whose records were
        decoded before arrays() asked for them: the drop_* queue)."""
        np_ = self.np
        out = np_.zeros(len(events), self.dtype)
        if not events:
            return out
        for name in self.dtype.names:
            values = [getattr(ev, name) for ev in events]
            if self.dtype.fields[name][0].kind == "S":
                values = [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
                          for v in values]
            out[name] = values
        return out


_columns: dict[type, Columns] = {}


def columns_for(event_type: type | None) -> Columns:
    """The cached :class:`Columns` of an event type (TypeError when it has none)."""
    if event_type is None:
        raise TypeError(
            "a stream of raw bytes has no columns: give the stream a fixed-size "
            "aioringbuf.Event type to use arrays()"
        )
    hit = _columns.get(event_type)
    if hit is None:
        hit = _columns[event_type] = Columns(event_type)
    return hit


def _block(np_: Any, data: Any, off: int, k: int, stride: int, record: Any, keep: Any) -> Any:
    """``k`` records at ``off`` as raw structs: one block copy of their span
    (headers included), seen through ``record`` (the struct as a ``V{size}``
    field at its offset, itemsize the stride), so the structs need no second
    copy; with ``keep`` (a mask) only those, then contiguous."""
    block = np_.frombuffer(data, np_.uint8, k * stride, off).copy()
    recs = block.view(record)["rec"]
    return recs if keep is None else recs[keep]


def _bad_record(cols: Columns, buf: Any, off: int, n: int) -> BaseException:
    """The error the event decoder raises for a record of the wrong size."""
    try:
        cols.decode(buf, off, n)
    except Exception as exc:
        return exc
    raise AssertionError(f"a {n}-byte record decoded as {cols.event_type.__name__}")


def ring_take(data: Any, base: int, mask: int, cons: int, prod: int, budget: int,
              cols: Columns, strict: bool) -> tuple[Any, TakeResult]:
    """Copy committed records from ``cons`` up to ``prod`` (at most ``budget``)
    into one array of ``cols.dtype``; the accounting of ``_ring.walk``.

    Returns ``(array or None, TakeResult)``. The header words of the span are
    read first and the records copied after them: on x86-64 loads are not
    reordered with older loads, so a record whose header said "committed"
    is copied with the kernel's data (see _ringmap for the ordering).
    """
    np_ = cols.np
    stride = cols.stride
    good_word, discard_word = cols._good, cols._discard
    pieces: list[Any] = []
    taken = discarded = decode_errors = 0
    busy = False
    error: BaseException | None = None
    while cons < prod and taken < budget:
        off = base + (cons & mask)
        # No more than the budget: discards among them only make a second round.
        n = min((prod - cons) // stride, budget - taken)
        word = -1
        if n:
            live = np_.frombuffer(data, cols.ring_header, n, off)["len"]
            good = live == good_word  # each header read once, before any data
            if good.all():  # the common case: n records of the type, nothing else
                k = ngood = n
            else:
                words = live.copy()  # read again, once: decide on this copy only
                good = words == good_word
                regular = good | (words == discard_word)
                k = n if regular.all() else int(regular.argmin())
                good = good[:k]
                ngood = int(np_.count_nonzero(good))
                if k == 0:
                    word = int(words[0])
            del live
            if k:
                pieces.append(_block(np_, data, off, k, stride, cols.ring_record,
                                     None if ngood == k else good))
                taken += ngood
                discarded += k - ngood
                cons += k * stride
                continue
        # An irregular record at cons: busy, or a size other than the type's,
        # judged on the copy above. A fresh read could see a record that was
        # busy then and is committed now, and count it as another size.
        if word < 0:
            word = _u32(data, off)[0]
        length = word & ~(BUSY_BIT | DISCARD_BIT)
        if word & BUSY_BIT:
            busy = True  # records are ordered by reservation: later ones wait
            break
        span = record_span(length)
        if span > prod - cons:
            raise RingCorrupt(
                f"ring buffer record at position {cons} claims {length} bytes, past the "
                f"producer position {prod}: the ring is corrupt"
            )
        cons += span
        if word & DISCARD_BIT:
            discarded += 1
            continue
        decode_errors += 1
        if strict:
            error = _bad_record(cols, data, off + HEADER_SIZE, length)
            break
    arr = cols.concat(pieces) if pieces else None
    return arr, TakeResult(cons, busy, discarded, decode_errors, error)


def perf_take(data: Any, base: int, size: int, tail: int, head: int, budget: int,
              cols: Columns, strict: bool) -> tuple[Any, TakeResult]:
    """Copy samples from ``tail`` up to ``head`` (at most ``budget``) into one
    array of ``cols.dtype``; the accounting of ``_perfring.walk_perf`` with
    ``exact_size`` the type's size (``lost`` sums PERF_RECORD_LOST records).

    Uniform runs of samples are copied in one strided copy each; a run ends
    where the ring wraps or at any other record, which is then taken alone.
    """
    np_ = cols.np
    mask = size - 1
    stride = cols.perf_stride
    padded = cols.padded
    pieces: list[Any] = []
    taken = decode_errors = lost = 0
    error: BaseException | None = None
    while tail < head and taken < budget:
        off = tail & mask
        n = min(min(head - tail, size - off) // stride, budget - taken)
        if n:
            hdr = np_.frombuffer(data, cols.perf_header, n, base + off).copy()
            regular = ((hdr["type"] == PERF_RECORD_SAMPLE) & (hdr["size"] == stride)
                       & (hdr["raw"] == padded))
            k = n if regular.all() else int(regular.argmin())
            k = min(k, budget - taken)
            if k:
                pieces.append(_block(np_, data, base + off, k, stride, cols.perf_record, None))
                taken += k
                tail += k * stride
                continue
        # One record alone: it wraps, or it is not a sample of the type's size.
        rtype, _misc, rsize = _perf_header(data, base + off)
        if rsize < HEADER_SIZE or rsize & 7:
            raise PerfRingCorrupt(
                f"perf ring record at position {tail} has size {rsize}: the ring is corrupt"
            )
        if off + rsize <= size:
            buf, roff = data, base + off
        else:
            first = size - off
            buf = bytes(data[base + off : base + size]) + bytes(data[base : base + rsize - first])
            roff = 0
        tail += rsize
        if rtype == PERF_RECORD_LOST:
            lost += _u64(buf, roff + 16)[0]
            continue
        if rtype != PERF_RECORD_SAMPLE:
            continue
        raw = _u32(buf, roff + HEADER_SIZE)[0]
        if raw > rsize - RAW_OFFSET:
            raise PerfRingCorrupt(
                f"perf sample at position {tail - rsize} claims {raw} bytes in a "
                f"{rsize}-byte record: the ring is corrupt"
            )
        if raw == padded:
            raw = cols.size
        if raw != cols.size:
            decode_errors += 1
            if strict:
                error = _bad_record(cols, buf, roff + RAW_OFFSET, raw)
                break
            continue
        start = roff + RAW_OFFSET
        pieces.append(np_.frombuffer(bytearray(buf[start : start + raw]), cols.raw))
        taken += 1
    arr = cols.concat(pieces) if pieces else None
    return arr, TakeResult(tail, False, 0, decode_errors, error, lost)
