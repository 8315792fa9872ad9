"""Sources: the kernel buffers a stream reads, behind one small interface.

The streams (``_stream.RawStream``, ``_queued.QueuedStream``) own everything async — waiting,
queueing, overflow, closing, counting. What differs between a BPF ring
buffer and a perf event array is only how records are found and handed
back, and that is all a source does:

* ``read(budget, events, starts, strict)`` decodes up to ``budget`` records
  into ``events`` (with their start positions in ``starts``, if given) and
  returns a :class:`~aioringbuf._ring.WalkResult` (or the plain tuple of the
  C walk: the stream unpacks it by position), whose ``skipped`` counts
  discarded records (a perf source keeps its loss reports to itself and
  says 0). It hands nothing back to the kernel: the records stay reserved
  until ``commit``.
* ``commit(pos)`` hands the space up to ``pos`` (``WalkResult.pos``, or a
  start from ``starts``) of the last ``read`` back to the kernel.
* ``quiet()``, called after ``commit`` and last before waiting on
  ``fileno()``: a full fence, then whether there is still nothing to read.
  When it says False, read again instead of sleeping: a record committed
  in the meantime may have found us not yet caught up, and sent no wakeup.
* ``fileno()`` is the one fd the event loop waits on for more.
* ``positions()``, ``size``, ``kernel_drops()`` feed ``stats()``.
* ``keeps_undelivered``: whether records read but never committed survive
  ``close()`` for the next consumer (a ring buffer map does; a perf ring
  dies with its consumer's perf event).
* ``read_columns(cols, budget, strict, span)`` is ``read`` into one numpy
  array (see ``_columns``), returning ``(array or None, start, result)``;
  with ``span=(start, end)`` it reads that span of the last read again,
  and ``reread(start, end, events, starts)`` decodes such a span as events.
* ``close()`` releases everything but the waited-on fd, ``close_fd()``
  that one: the stream closes it only once no task is registered on it.

:func:`open_ring` and :func:`open_perf` build them: the map layer checks
the map (``_ringmap``, ``_perfmap``), the codec checks the layout and gives
the decoder, and the source claims the map for this process (one buffer,
one consumer) until ``close()``. See docs/architecture.md, "Layers".
"""

from __future__ import annotations

import os
import select
from collections.abc import MutableSequence
from typing import Any, Protocol

from . import _syscall
from ._codec import check_layout
from ._columns import Columns, TakeResult, perf_take, ring_take
from ._errors import ConsumerBusyError
from ._fast import full_fence, walk, walk_perf
from ._perfmap import PerfRings, perf_map_info
from ._perfring import RAW_OFFSET
from ._ring import HEADER_SIZE, Decode, Stop, WalkResult
from ._ringmap import RingMemory, ring_map_info
from ._union import record_type

# One buffer, one consumer: ids of the maps a source of this process reads.
_consumers: set[int] = set()


def claim_consumer(info: _syscall.MapInfo, kind: str) -> None:
    """Refuse a second consumer of one map in this process (one buffer, one consumer)."""
    if info.id in _consumers:
        raise ConsumerBusyError(
            f"{kind} {info.name!r} (map id {info.id}) already has a consumer in this "
            "process; a ring has exactly one consumer: share its events with "
            "aioringbuf.Broadcast instead of opening it twice"
        )
    _consumers.add(info.id)


def release_consumer(map_id: int) -> None:
    _consumers.discard(map_id)


BUSY_BACKOFF = 0.0002  # seconds to wait for a reserved record to be committed


def open_ring(map_fd: int, event_type: type | None, drop_counter_fd: int | None,
              adaptive_wakeups: bool = False) -> RingSource:
    """A source over a ``BPF_MAP_TYPE_RINGBUF`` map fd (checked, claimed)."""
    info = ring_map_info(map_fd)
    decode = check_layout(record_type(event_type), info.max_entries, HEADER_SIZE,
                          f"ring buffer {info.name!r}", "use a larger ring").decode
    claim_consumer(info, "ring buffer")
    try:
        return RingSource(map_fd, info, decode, drop_counter_fd, adaptive_wakeups)
    except BaseException:
        _consumers.discard(info.id)
        raise


def open_perf(map_fd: int, event_type: type | None, drop_counter_fd: int | None,
              per_cpu_size: int, cpus: Any, wakeup_events: int,
              watermark: int | None) -> PerfSource:
    """A source over a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` (checked, claimed)."""
    info = perf_map_info(map_fd, per_cpu_size, wakeup_events, watermark)
    decode, exact = check_layout(record_type(event_type), per_cpu_size, RAW_OFFSET,
                                 "each perf ring",
                                 "use a larger per_cpu_size")
    claim_consumer(info, "perf event array")
    try:
        return PerfSource(map_fd, info, decode, exact, drop_counter_fd, per_cpu_size, cpus,
                          wakeup_events, watermark)
    except BaseException:
        _consumers.discard(info.id)
        raise


class Source(Protocol):
    name: str
    map_id: int
    size: int
    keeps_undelivered: bool

    def fileno(self) -> int: ...
    def read(self, budget: int, events: list[Any], starts: MutableSequence[int] | None,
             strict: bool) -> WalkResult: ...
    def commit(self, pos: int) -> None: ...
    def quiet(self) -> bool: ...
    def announcements(self) -> select.epoll | None: ...
    def positions(self) -> tuple[int, int]: ...
    def kernel_drops(self) -> int | None: ...
    def close(self) -> None: ...
    def close_fd(self) -> None: ...


def _dup(fd: int | None) -> int:
    return -1 if fd is None else os.dup(fd)


class RingSource:
    """A ``BPF_MAP_TYPE_RINGBUF`` map: one mmap, one consumer position."""

    keeps_undelivered = True

    def __init__(self, map_fd: int, info: _syscall.MapInfo, decode: Decode,
                 drop_counter_fd: int | None, adaptive_wakeups: bool = False) -> None:
        self.name = info.name
        self.map_id = info.id
        self.size = size = info.max_entries
        self._decode = decode
        self._fd = self._drops_fd = -1
        self._mem: RingMemory | None = None
        self._announced: select.epoll | None = None
        try:
            self._fd = os.dup(map_fd)
            self._drops_fd = _dup(drop_counter_fd)
            self._mem = RingMemory(self._fd, size)
            if adaptive_wakeups:
                # From the start, so that each announcement is seen once.
                self._announced = select.epoll()
                self._announced.register(self._fd, select.EPOLLIN | select.EPOLLET)
        except BaseException:
            self.close()
            self.close_fd()
            raise

    def fileno(self) -> int:
        return self._fd

    def read(self, budget: int, events: list[Any], starts: MutableSequence[int] | None,
             strict: bool) -> WalkResult:
        mem = self._mem
        assert mem is not None
        return walk(mem.data, mem.base, mem.mask, mem.consumer_pos(), mem.producer_pos(),
                    budget, self._decode, events, starts, strict)

    def read_columns(self, cols: Columns, budget: int, strict: bool,
                     span: tuple[int, int] | None = None) -> tuple[Any, int, TakeResult]:
        mem = self._mem
        assert mem is not None
        cons, prod = span or (mem.consumer_pos(), mem.producer_pos())
        arr, res = ring_take(mem.data, mem.base, mem.mask, cons, prod, budget, cols, strict)
        return arr, cons, res

    def reread(self, start: int, end: int, events: list[Any],
               starts: MutableSequence[int]) -> None:
        mem = self._mem
        assert mem is not None
        walk(mem.data, mem.base, mem.mask, start, end, 1 << 62, self._decode, events, starts,
             False)

    def commit(self, pos: int) -> None:
        assert self._mem is not None
        self._mem.publish_consumer_pos(pos)

    def quiet(self) -> bool:
        assert self._mem is not None
        return self._mem.quiet()

    def positions(self) -> tuple[int, int]:
        assert self._mem is not None
        return self._mem.consumer_pos(), self._mem.producer_pos()

    def kernel_drops(self) -> int | None:
        return _syscall.percpu_u64_sum(self._drops_fd) if self._drops_fd >= 0 else None

    def close(self) -> None:
        _consumers.discard(self.map_id)
        if self._mem is not None:
            self._mem.close()
            self._mem = None
        if self._drops_fd >= 0:
            os.close(self._drops_fd)
            self._drops_fd = -1

    def announcements(self) -> select.epoll | None:
        """For a ring written with adaptive submits: an epoll set holding the
        ring's fd edge-triggered, readable only once the kernel has woken the
        ring (a threshold crossed, the delay passed) since it was last polled,
        where the fd itself is readable whenever a record waits. None for
        other rings (their records are announced only to a caught-up
        consumer: waiting for an announcement could wait for ever)."""
        return self._announced

    def close_fd(self) -> None:
        if self._announced is not None:
            self._announced.close()
            self._announced = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class PerfSource:
    """A ``BPF_MAP_TYPE_PERF_EVENT_ARRAY``: one perf ring per CPU, read in turn.

    Each ``read`` takes records from one CPU's ring only (the next one with
    data, round robin, so a busy CPU cannot starve the others), which keeps
    ``commit`` exact. Records are in order within a CPU; across CPUs there
    is no order to keep.
    """

    keeps_undelivered = False

    def __init__(self, map_fd: int, info: _syscall.MapInfo, decode: Decode,
                 exact_size: int, drop_counter_fd: int | None, per_cpu_size: int,
                 cpus: Any, wakeup_events: int, watermark: int | None) -> None:
        self.name = info.name
        self.map_id = info.id
        self._decode = decode
        self._exact = exact_size
        self._lost = 0  # from PERF_RECORD_LOST records, when the kernel cannot say more
        self._cur: Any = None  # the ring of the last read, which commit() applies to
        self._next = 0
        self._drops_fd = -1
        self._rings: PerfRings | None = None
        try:
            self._drops_fd = _dup(drop_counter_fd)
            self._rings = PerfRings(map_fd, info.max_entries, per_cpu_size, cpus,
                                    wakeup_events, watermark)
        except BaseException:
            self.close()
            self.close_fd()
            raise
        self.cpus = [r.cpu for r in self._rings.rings]
        self.size = per_cpu_size * len(self.cpus)

    def fileno(self) -> int:
        assert self._rings is not None
        return self._rings.fileno()

    def read(self, budget: int, events: list[Any], starts: MutableSequence[int] | None,
             strict: bool) -> WalkResult:
        assert self._rings is not None
        rings = self._rings.rings
        n = len(rings)
        decode_errors = 0
        for k in range(n):
            i = (self._next + k) % n
            ring = rings[i]
            tail = ring.tail()
            head = ring.head()
            if tail == head:
                continue
            pos, stop, errors, lost, error = walk_perf(
                ring.data, ring.base, ring.size, tail, head, budget, self._decode,
                events, starts, strict, self._exact)
            self._lost += lost
            decode_errors += errors
            if events or error is not None:
                self._cur = ring
                self._next = (i + 1) % n
                return WalkResult(pos, stop, decode_errors, 0, error)
            ring.publish_tail(pos)  # only losses or bad records there: nothing to keep
        self._cur = None
        return WalkResult(0, Stop.EMPTY, decode_errors)

    def read_columns(self, cols: Columns, budget: int, strict: bool,
                     span: tuple[int, int] | None = None) -> tuple[Any, int, TakeResult]:
        assert self._rings is not None
        if span is not None:  # losses in it were counted when it was first read
            ring = self._cur
            arr, res = perf_take(ring.data, ring.base, ring.size, span[0], span[1], budget,
                                 cols, strict)
            return arr, span[0], res
        rings = self._rings.rings
        n = len(rings)
        decode_errors = 0
        for k in range(n):  # as read(): one ring per call, round robin
            i = (self._next + k) % n
            ring = rings[i]
            tail = ring.tail()
            head = ring.head()
            if tail == head:
                continue
            arr, (pos, _, _, errors, error, lost) = perf_take(
                ring.data, ring.base, ring.size, tail, head, budget, cols, strict)
            self._lost += lost
            decode_errors += errors
            if arr is not None or error is not None:
                self._cur = ring
                self._next = (i + 1) % n
                return arr, tail, TakeResult(pos, False, 0, decode_errors, error)
            ring.publish_tail(pos)
        self._cur = None
        return None, 0, TakeResult(0, decode_errors=decode_errors)

    def reread(self, start: int, end: int, events: list[Any],
               starts: MutableSequence[int]) -> None:
        ring = self._cur
        walk_perf(ring.data, ring.base, ring.size, start, end, 1 << 62, self._decode, events,
                  starts, False, self._exact)

    def commit(self, pos: int) -> None:
        if self._cur is not None:
            self._cur.publish_tail(pos)

    def announcements(self) -> select.epoll | None:
        return None  # perf rings announce by count or watermark: wakeup_events=

    def quiet(self) -> bool:
        """Every ring still empty after a full fence. Perf rings wake their
        reader by count or watermark (perf_output_wakeup()), not by where it
        stands, so this is a last look rather than a race closed."""
        assert self._rings is not None
        full_fence()
        return all(r.head() == r.tail() for r in self._rings.rings)

    def positions(self) -> tuple[int, int]:
        assert self._rings is not None
        rings = self._rings.rings
        return sum(r.tail() for r in rings), sum(r.head() for r in rings)

    def kernel_drops(self) -> int | None:
        """Samples lost in full perf rings, plus failed outputs the BPF side counted.

        On Linux >= 6.0 the kernel's own per-event count (PERF_FORMAT_LOST)
        is exact at any moment; before that, PERF_RECORD_LOST records say
        it, but only once the next sample after a loss has been written.
        """
        assert self._rings is not None
        if self._rings.count_lost:
            lost = sum(r.lost_samples() for r in self._rings.rings)
        else:
            lost = self._lost
        if self._drops_fd >= 0:
            lost += _syscall.percpu_u64_sum(self._drops_fd)
        return lost

    def close(self) -> None:
        # The perf fds are registered in our own epoll set, not in the loop's:
        # they can go now; only the epoll fd waits for close_fd().
        _consumers.discard(self.map_id)
        self._cur = None
        if self._rings is not None:
            self._rings.close()
        if self._drops_fd >= 0:
            os.close(self._drops_fd)
            self._drops_fd = -1

    def close_fd(self) -> None:
        if self._rings is not None:
            self._rings.close_epoll()
            self._rings = None
