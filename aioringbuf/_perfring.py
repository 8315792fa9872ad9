"""Walking the records of one perf ring: pure logic, no syscalls.

A perf ring (one per CPU of a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY``) differs
from a BPF ring buffer in three ways that matter here:

* Its data area is mapped once, so a record that runs past the end
  continues at the start: such a record is copied out in two pieces.
* Records are ``struct perf_event_header { u32 type; u16 misc; u16 size; }``
  plus a body. ``bpf_perf_event_output`` writes ``PERF_RECORD_SAMPLE``
  whose body (with ``PERF_SAMPLE_RAW`` only) is ``u32 size`` then the
  sample; the kernel pads ``size + 4`` up to 8 bytes (skipping the pad
  bytes, not zeroing them) and counts the padding in ``size``, so a
  32-byte struct arrives as 36 bytes.
* Losses are reported in band: when the ring was full, the next record
  that fits is preceded by ``PERF_RECORD_LOST { u64 id; u64 lost; }``.

Headers are 8-byte aligned and 8 bytes long, so a header itself never
wraps. Everything here works on any buffer laid out that way, which is
what makes it testable without a kernel (see tests/test_perf_walk.py).
"""

from __future__ import annotations

import struct
from collections.abc import MutableSequence
from typing import Any

from ._ring import Decode, RingCorrupt, Stop, WalkResult

PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
HEADER_SIZE = 8
RAW_OFFSET = HEADER_SIZE + 4  # the sample starts after the u32 raw size
LOST_SIZE = HEADER_SIZE + 16  # struct { header; u64 id; u64 lost; }

_header = struct.Struct("<IHH").unpack_from
_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from


class PerfRingCorrupt(RingCorrupt):
    """A perf ring header that cannot be right: size 0, not 8-aligned, past
    ``data_head``, or too short for its type. Fatal: the consumer cannot
    find the next record any more.
    """


def padded_raw_size(size: int) -> int:
    """The raw size the kernel reports for a ``size``-byte sample."""
    return ((size + 4 + 7) & ~7) - 4


def walk_perf(
    data: Any,
    base: int,
    size: int,
    tail: int,
    head: int,
    budget: int,
    decode: Decode,
    events: list[Any],
    starts: MutableSequence[int] | None,
    strict: bool,
    exact_size: int = -1,
) -> WalkResult:
    """Decode samples from ``tail`` up to ``head``, at most ``budget`` of them.

    The same contract as :func:`aioringbuf._ring.walk` (records are copied
    out before the caller publishes ``pos`` as the new ``data_tail``),
    plus: ``skipped`` in the result sums the samples that the
    ``PERF_RECORD_LOST`` records passed report lost, and a sample of
    exactly ``padded_raw_size(exact_size)`` bytes is decoded as
    ``exact_size`` bytes, undoing the kernel's padding for fixed-size event
    types. Never stops with ``Stop.BUSY``: the kernel moves ``data_head``
    past complete records only.
    """
    mask = size - 1
    padded = padded_raw_size(exact_size) if exact_size >= 0 else -1
    taken = decode_errors = lost = 0
    while tail < head and taken < budget:
        off = tail & mask
        rtype, _misc, rsize = _header(data, base + off)
        if rsize < HEADER_SIZE or rsize & 7 or rsize > head - tail or rsize > size:
            raise PerfRingCorrupt(
                f"perf ring record at position {tail} has size {rsize}: the ring is corrupt"
            )
        if rtype == PERF_RECORD_LOST and rsize < LOST_SIZE:
            raise PerfRingCorrupt(
                f"perf lost record at position {tail} has size {rsize}, less than "
                f"{LOST_SIZE}: the ring is corrupt"
            )
        if rtype == PERF_RECORD_SAMPLE and rsize < RAW_OFFSET:
            raise PerfRingCorrupt(
                f"perf sample at position {tail} has size {rsize}, too short for its raw "
                "size: the ring is corrupt"
            )
        if off + rsize <= size:
            buf, roff = data, base + off
        else:  # wraps: copy out the two pieces
            first = size - off
            buf = bytes(data[base + off : base + size]) + bytes(data[base : base + rsize - first])
            roff = 0
        start = tail
        tail += rsize
        if rtype == PERF_RECORD_LOST:
            lost += _u64(buf, roff + 16)[0]
            continue
        if rtype != PERF_RECORD_SAMPLE:
            continue  # nothing else is asked for; skip what a newer kernel may add
        n = _u32(buf, roff + HEADER_SIZE)[0]
        if n > rsize - RAW_OFFSET:
            raise PerfRingCorrupt(
                f"perf sample at position {start} claims {n} bytes in a "
                f"{rsize}-byte record: the ring is corrupt"
            )
        if n == padded:
            n = exact_size
        try:
            ev = decode(buf, roff + RAW_OFFSET, n)
        except Exception as exc:
            decode_errors += 1
            if strict:
                return WalkResult(tail, Stop.ERROR, decode_errors, lost, exc)
            continue
        events.append(ev)
        if starts is not None:
            starts.append(start)
        taken += 1
    return WalkResult(tail, Stop.EMPTY if tail >= head else Stop.BUDGET, decode_errors, lost)
