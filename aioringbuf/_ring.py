"""Walking the records of a BPF ring buffer: pure logic, no syscalls.

The kernel writes each record as an 8-byte header (``u32 len`` whose bit 31
is BUSY and bit 30 is DISCARD, then ``u32 pg_off``) followed by the sample,
and the record occupies ``round_up(len + 8, 8)`` bytes. The data area is
mapped twice in a row, so a record that wraps is still contiguous: reading
``data[base + (pos & mask):]`` never needs to split. Everything here works
on any buffer laid out that way, which is what makes it testable without
a kernel (see tests/test_ring_walk.py).
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections.abc import Callable, MutableSequence
from typing import Any, NamedTuple

from ._errors import AioRingBufError

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8

# Native 'I' at a 4-aligned offset: one 32-bit load, which on x86-64 is the
# acquire that pairs with bpf_ringbuf_commit()'s xchg(&hdr->len, ...) (see
# _order for why, and why this pure-Python walk refuses other CPUs).
_header = struct.Struct("I").unpack_from


class HeaderState(enum.Enum):
    """What a record header says about its record."""

    DATA = "data"  # committed: deliver it
    DISCARDED = "discarded"  # committed with bpf_ringbuf_discard: skip it
    BUSY = "busy"  # reserved, not committed yet: stop here


def parse_header(word: int) -> tuple[HeaderState, int]:
    """Split a header's ``len`` word into its state and the sample length."""
    length = word & ~(BUSY_BIT | DISCARD_BIT)
    if word & BUSY_BIT:
        return HeaderState.BUSY, length
    if word & DISCARD_BIT:
        return HeaderState.DISCARDED, length
    return HeaderState.DATA, length


def record_span(length: int) -> int:
    """Bytes a record of ``length`` sample bytes occupies in the ring."""
    return (length + HEADER_SIZE + 7) & ~7


Decode = Callable[[Any, int, int], Any]


class RingCorrupt(AioRingBufError, RuntimeError):
    """A record header that cannot be right: it runs past what the kernel published.

    Fatal: the consumer cannot find the next record any more.
    """


class Stop(enum.IntEnum):
    """Why a walk stopped (the C walks return the same numbers as plain ints)."""

    EMPTY = 0  # reached the producer position: nothing more to read now
    BUSY = 1  # the next record is reserved but not committed yet (ring buffers only)
    BUDGET = 2  # took ``budget`` records; more are waiting
    ERROR = 3  # strict, and a record failed to decode: ``error`` is set


class WalkResult(NamedTuple):
    """Where a walk stopped, why, and what it counted on the way (deltas).

    A plain tuple, so that the C walks (aioringbuf/_c/walk.c) can return
    the same thing; callers unpack it by position.
    """

    pos: int  # the position after the last record consumed
    stop: Stop
    decode_errors: int = 0  # records consumed that ``decode`` rejected
    # Consumed without an event: DISCARD records (ring buffer walk), or
    # samples the kernel reported lost in PERF_RECORD_LOST (perf ring walk).
    skipped: int = 0
    error: BaseException | None = None  # set only when strict (stop is ERROR)


def walk(
    data: Any,
    base: int,
    mask: int,
    cons: int,
    prod: int,
    budget: int,
    decode: Decode,
    events: list[Any],
    starts: MutableSequence[int] | None,
    strict: bool,
) -> WalkResult:
    """Decode committed records from ``cons`` up to ``prod``, at most ``budget``.

    Appends each decoded record to ``events`` (and, if given, the position of
    its header to ``starts``, a list or an ``array('Q')``, so a consumer that
    stops early can hand back exactly the undelivered ones). Records are
    copied out by ``decode`` before the caller publishes the returned
    ``pos`` as the new consumer position: after that the kernel may
    overwrite them. A record ``decode`` rejects is consumed and counted;
    when ``strict`` the walk stops right after it and returns the error for
    the caller to raise in order. A header whose record runs past ``prod``
    raises :class:`RingCorrupt` (the kernel moves ``producer_pos`` past
    whole records only).
    """
    special = getattr(decode, "ring_walk", None)
    if special is not None:  # this walk with the decoder inlined (specialized_walk)
        return special(data, base, mask, cons, prod, budget, decode, events,  # type: ignore[no-any-return]
                       starts, strict)
    taken = discarded = decode_errors = 0
    while cons < prod and taken < budget:
        off = base + (cons & mask)
        word = _header(data, off)[0]
        if word & BUSY_BIT:
            # Records are ordered by reservation: later ones wait for this one.
            return WalkResult(cons, Stop.BUSY, decode_errors, discarded)
        length = word & ~(BUSY_BIT | DISCARD_BIT)
        span = (length + HEADER_SIZE + 7) & ~7
        if span > prod - cons:
            raise _corrupt(cons, length, prod)
        start = cons
        cons += span
        if word & DISCARD_BIT:
            discarded += 1
            continue
        try:
            ev = decode(data, off + HEADER_SIZE, length)
        except Exception as exc:
            decode_errors += 1
            if strict:
                return WalkResult(cons, Stop.ERROR, decode_errors, discarded, exc)
            continue
        events.append(ev)
        if starts is not None:
            starts.append(start)
        taken += 1
    return WalkResult(cons, Stop.EMPTY if cons >= prod else Stop.BUDGET, decode_errors,
                      discarded)


def _corrupt(cons: int, length: int, prod: int) -> RingCorrupt:
    return RingCorrupt(
        f"ring buffer record at position {cons} claims {length} bytes, past the "
        f"producer position {prod}: the ring is corrupt"
    )


# walk() above, line for line, with a decoder's statements (buf, off, n in;
# ev out) in place of the call to it. For the pure-Python path, where a
# Python call per record costs as much as the decoding itself. {block} is
# empty, or (for a layout of fixed size whose records decode with one
# unpack and one constructor call that cannot fail) _BLOCK below.
_SPECIALIZED = """
def walk(buf, base, mask, cons, prod, budget, decode, events, starts, strict):
    taken = discarded = decode_errors = 0
    append = events.append
    add_start = None if starts is None else starts.append
    single = 0
    while cons < prod and taken < budget:
{block}
        hoff = base + (cons & mask)
        word = _header(buf, hoff)[0]
        if word & BUSY_BIT:
            return _Result(cons, _BUSY, decode_errors, discarded)
        n = word & LENGTH
        span = (n + 15) & ~7
        if span > prod - cons:
            raise _corrupt(cons, n, prod)
        start = cons
        cons += span
        if word & DISCARD_BIT:
            discarded += 1
            continue
        off = hoff + 8
        try:
{decode}
        except Exception as exc:
            decode_errors += 1
            if strict:
                return _Result(cons, _ERROR, decode_errors, discarded, exc)
            continue
        append(ev)
        if add_start is not None:
            add_start(start)
        taken += 1
    return _Result(cons, _EMPTY if cons >= prod else _BUDGET, decode_errors, discarded)
"""

# The block step: a run of records whose header word is exactly _SIZE
# (committed, not discarded, the one size the decoder accepts) is what the
# loop below it would take one by one, with the same events and starts;
# here its headers are loaded in one pass, then its fields in one, and the
# events built without a Python frame per record (starmap over
# iter_unpack). Any other header ends the run: the loop takes that record
# and the next _RUN_MIN one by one (so that a ring of alternating discards
# does not pay for a block that yields one record), then tries a block
# again. Ordering: every header is loaded (memoryview.tolist: one 4-byte
# load each, in address order) before any field, and x86-64 keeps loads in
# program order, so each record's fields are read after its committed
# header, as in the loop. The views are temporaries of one statement each:
# none outlives it (an exported mmap could not be closed).
_BLOCK = """\
        if single:
            single -= 1
        else:
            hoff = base + (cons & mask)
            k = min(budget - taken, (prod - cons) // _SPAN, (len(buf) - hoff) // _SPAN)
            if k >= _RUN_MIN:
                heads = _view(buf)[hoff:hoff + k * _SPAN].cast("I")[::_STRIDE].tolist()
                j = k
                if heads.count(_SIZE) != k:
                    j = 0
                    while heads[j] == _SIZE:
                        j += 1
                    single = _RUN_MIN
                if j:
                    events.extend(_starmap(_cls, _rows(_view(buf)[hoff:hoff + j * _SPAN])))
                    if starts is not None:
                        starts.extend(range(cons, cons + j * _SPAN, _SPAN))
                    cons += j * _SPAN
                    taken += j
                continue
"""

_RUN_MIN = 8  # the shortest run of records the block step takes


def specialized_walk(stmts: list[str], namespace: dict[str, Any], name: str,
                     fields: str | None = None, size: int = 0) -> Callable[..., Any]:
    """:func:`walk` with the decoding statements ``stmts`` inlined; they run
    with ``namespace`` (the decoder's) and may raise like the decoder.

    ``fields`` (a ``struct`` format in standard sizes) and ``size`` add the
    block step (see ``_BLOCK``): for a fixed-size layout that decodes as
    ``_cls(*struct.unpack_from(fields, ...))`` and whose constructor cannot
    fail, so that a block of records gives what the loop would.
    """
    body = "".join(" " * 12 + line + "\n" for stmt in stmts for line in stmt.split("\n"))
    scope = {
        **namespace, "_header": _header, "_Result": WalkResult, "_corrupt": _corrupt,
        "BUSY_BIT": BUSY_BIT, "DISCARD_BIT": DISCARD_BIT, "LENGTH": ~(BUSY_BIT | DISCARD_BIT),
        "_BUSY": Stop.BUSY, "_ERROR": Stop.ERROR, "_EMPTY": Stop.EMPTY, "_BUDGET": Stop.BUDGET,
    }
    block = ""
    if fields is not None:
        span = record_span(size)
        pad = span - HEADER_SIZE - struct.calcsize(fields)  # the tail padding, the 8-rounding
        rows = struct.Struct(f"<{HEADER_SIZE}x{fields.lstrip('<')}{pad}x")
        scope.update(_view=memoryview, _starmap=itertools.starmap, _rows=rows.iter_unpack,
                     _SPAN=span, _STRIDE=span // 4, _SIZE=size, _RUN_MIN=_RUN_MIN)
        block = _BLOCK
    src = _SPECIALIZED.format(decode=body, block=block)
    exec(compile(src, f"<aioringbuf walk for {name}>", "exec"), scope)
    return scope["walk"]  # type: ignore[no-any-return]
