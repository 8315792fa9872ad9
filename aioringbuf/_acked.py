"""AckedRing: a ring buffer whose space returns to the kernel only when acknowledged.

The other streams hand a record's space back as soon as they deliver it.
Here delivery and acknowledgement are two steps, like a Kafka consumer's
manual commit: :meth:`AckedRing.batch` returns records (walking ahead of
``consumer_pos`` in memory only) and :meth:`AckedRing.ack` stores
``consumer_pos`` up to a record's end. The kernel cannot reserve past
``consumer_pos``, so records delivered but not acknowledged stay intact;
in a pinned ring (``aioringbuf._pin``) a consumer that dies before
acknowledging leaves them to the next one, which starts at the stored
``consumer_pos`` and sees them again, with the same keys::

    async with AckedRing(fd, ExecEvent) as ring:
        async for batch in ring:
            for rec in batch:
                await send(rec.key, rec.event)      # key: a deduplication key
                ring.ack(rec.end)                   # in order

Each record's ``key`` is ``<boot id>:<map id>:<position>``: the position
only grows for the life of a map, the map id is not reused while the
machine is up, and the boot id tells machines and boots apart.

Waiting differs from the other streams: the ring's fd reports readable
whenever ``consumer_pos < producer_pos``, which is always true while
records are unacknowledged, and the kernel wakes a waiter on commit only
when ``consumer_pos`` had reached the record. So with records outstanding
the ring waits for an acknowledgement or a short poll interval instead of
the fd; once everything is acknowledged it waits on the fd as usual.
"""

from __future__ import annotations

import array
import functools
import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from . import _syscall
from ._codec import decoder_for
from ._fast import walk
from ._ring import Stop
from ._ringmap import RingMemory, ring_map_info
from ._source import claim_consumer, release_consumer
from ._union import record_type

T = TypeVar("T")
_BUSY_BACKOFF = 0.0002


@functools.cache
def boot_id() -> str:
    """This boot's random id (``/proc/sys/kernel/random/boot_id``)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


class RingRecord(NamedTuple):
    """One delivered record: ``ack(end)`` hands it (and all before it) back."""

    key: str  # "<boot id>:<map id>:<pos>": stable across consumers of this ring
    pos: int  # ring position of the record's header
    end: int
    event: Any  # the decoded event (bytes without an event type)


class AckedStats(msgspec.Struct, frozen=True):
    """Counters of an :class:`AckedRing` (this consumer's, except kernel_drops)."""

    delivered: int  # records handed out by batch() (again after a restart)
    acked_pos: int  # consumer_pos: everything before it is handed back
    walked_pos: int  # end of the last record delivered
    producer_pos: int
    unacked_bytes: int  # walked_pos - acked_pos
    kernel_drops: int | None  # the ring's drop counter (the map's whole life)
    decode_errors: int
    discarded: int
    ring_size: int


class AckedRing(Generic[T]):
    """A ``BPF_MAP_TYPE_RINGBUF`` map fd, read ahead and handed back on :meth:`ack`.

    ``map_fd`` is duplicated (the caller keeps its own); ``drop_counter_fd``
    is the ``<ring>_drops`` per-CPU counter. ``budget`` bounds one batch;
    ``poll_interval`` is how often a ring with unacknowledged records looks
    for new ones (see the module's note on waiting).
    """

    def __init__(self, map_fd: int, event_type: type[T] | None = None, *, budget: int = 1024,
                 drop_counter_fd: int | None = None, poll_interval: float = 0.005) -> None:
        self._closed = True
        if budget < 1:
            raise ValueError(f"budget must be >= 1, not {budget!r}")
        info = ring_map_info(map_fd)  # the map layer's checks, as for RingBuffer
        self.map_id = info.id
        self._decode = decoder_for(record_type(event_type))
        self._budget = budget
        self._poll = poll_interval
        claim_consumer(info, "ring buffer")
        self._fd = self._drops_fd = -1
        try:
            self._fd = os.dup(map_fd)
            if drop_counter_fd is not None:
                self._drops_fd = os.dup(drop_counter_fd)
            self._mem = RingMemory(self._fd, info.max_entries)
        except BaseException:
            self._close_fds()
            release_consumer(info.id)
            raise
        self._closed = False
        self._prefix = f"{boot_id()}:{info.id}:"
        self._acked = self._walked = self._last_end = self._mem.consumer_pos()
        self._delivered = self._decode_errors = self._discarded = 0
        self._acked_event: anyio.Event | None = None
        self._waiting_fd = False
        self._busy = False

    @property
    def ring_id(self) -> str:
        """``<boot id>:<map id>``: the part of every key that names this ring."""
        return self._prefix[:-1]

    # -- delivering -----------------------------------------------------------

    async def batch(self) -> list[RingRecord]:
        """Wait for at least one record; return up to ``budget``, in ring order."""
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            records = self._take()
            if records:
                await anyio.lowlevel.checkpoint()
                return records
            if self._busy:
                await anyio.sleep(_BUSY_BACKOFF)
            elif self._acked < self._walked:
                if self._acked_event is None:
                    self._acked_event = anyio.Event()
                with anyio.move_on_after(self._poll):
                    await self._acked_event.wait()
            else:
                self._waiting_fd = True
                try:
                    await anyio.wait_readable(self._fd)
                finally:
                    self._waiting_fd = False

    def _take(self) -> list[RingRecord]:
        mem = self._mem
        events: list[Any] = []
        starts: array.array[int] = array.array("Q")
        res = walk(mem.data, mem.base, mem.mask, self._walked, mem.producer_pos(),
                   self._budget, self._decode, events, starts, False)
        pos, stop, errors, discarded = res[0], res[1], res[2], res[3]
        self._busy = stop == Stop.BUSY
        self._discarded += discarded
        self._decode_errors += errors
        if pos == self._walked:
            return []
        self._walked = pos
        if not events:
            # Only records nobody will see: hand them back unless some wait for an ack.
            if self._acked == self._last_end:
                self._publish(pos)
            return []
        n = len(events)
        prefix = self._prefix
        records = [
            RingRecord(f"{prefix}{starts[i]}", starts[i],
                       starts[i + 1] if i + 1 < n else pos, events[i])
            for i in range(n)
        ]
        self._last_end = pos
        self._delivered += n
        return records

    def __aiter__(self) -> AsyncIterator[list[RingRecord]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[RingRecord]]:
        while True:
            try:
                yield await self.batch()
            except anyio.ClosedResourceError:
                return

    # -- acknowledging ----------------------------------------------------------

    def ack(self, pos: int) -> None:
        """Hand back every record that ends at or before ``pos`` (a record's ``end``).

        Acknowledging out of order is an error: ``pos`` never moves back.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        if pos < self._acked or pos > self._walked:
            raise ValueError(f"ack({pos}) outside the unacknowledged span "
                             f"[{self._acked}, {self._walked}]")
        # Acking the last delivered record also hands back skipped ones after it.
        self._publish(self._walked if pos == self._last_end else pos)
        if self._acked_event is not None:
            self._acked_event.set()
            self._acked_event = None

    def _publish(self, pos: int) -> None:
        self._acked = pos
        self._last_end = max(self._last_end, pos)
        self._mem.publish_consumer_pos(pos)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def unacked(self) -> int:
        """Bytes of the ring delivered but not acknowledged."""
        return self._walked - self._acked

    # -- closing and statistics -------------------------------------------------

    def stats(self) -> AckedStats:
        prod = self._mem.producer_pos() if not self._closed else self._walked
        drops = (_syscall.percpu_u64_sum(self._drops_fd) if self._drops_fd >= 0 else None)
        return AckedStats(self._delivered, self._acked, self._walked, prod,
                          self._walked - self._acked, drops, self._decode_errors,
                          self._discarded, self._mem.size)

    def close(self) -> None:
        """Release the mapping and fds; unacknowledged records stay in the ring."""
        if self._closed:
            return
        self._closed = True
        self._mem.close()
        if self._waiting_fd:
            anyio.notify_closing(self._fd)
        self._close_fds()
        release_consumer(self.map_id)

    def _close_fds(self) -> None:
        for name in ("_fd", "_drops_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> AckedRing[T]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()
