"""EventStream: a kernel buffer as an async iterator of decoded events.

The only module that awaits, shared by :class:`~aioringbuf.RingBuffer` and
:class:`~aioringbuf.PerfBuffer`, which differ only in their source (see
``_source``). Its loop is the one DESIGN.md describes: drain committed
records (a budget at a time, yielding to the event loop between batches),
and when the buffer is empty wait for the kernel's wakeup with
``anyio.wait_readable`` on the source's fd (one-shot, so a consumer that is
not asking for more is never woken) or for ``flush_interval``, whichever
comes first.

Two ways to run, chosen by ``overflow``:

* ``"block"`` (default): the iterating task drains the buffer itself, at
  most ``maxsize`` records at a time, and hands space back to the kernel
  only for records it has delivered. When the consumer is slow the kernel
  buffer fills and the kernel side counts its drops; closing mid-batch
  leaves the undelivered records in a ring buffer for the next consumer
  (a perf ring dies with its consumer: they count as ``queue_drops``).
* ``"drop_oldest"`` / ``"drop_newest"``: a background task (owned by
  ``async with``) keeps the kernel buffer empty and feeds a bounded queue;
  when the queue is full the policy evicts, and every eviction is counted
  in ``queue_drops`` (so are records still queued when the stream closes).

``async for ev in stream`` yields events; ``async for batch in
stream.batches()`` yields lists of them, as drained (cheaper per event).
"""

from __future__ import annotations

import array
import collections
import os
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.lowlevel

from . import _syscall
from ._errors import AioRingBufError, ConsumerBusyError
from ._fast import Cursor
from ._ring import Stop
from ._source import Source
from ._stats import StreamStats

T = TypeVar("T")
S = TypeVar("S", bound="EventStream[Any]")
Overflow = Literal["block", "drop_oldest", "drop_newest"]
_OVERFLOW = ("block", "drop_oldest", "drop_newest")
_BUSY_BACKOFF = 0.0002  # seconds to wait for a reserved record to be committed

# One buffer, one consumer: map ids with a live stream in this process.
_consumers: set[int] = set()


@dataclass(frozen=True)
class StreamOptions:
    """The options every stream takes, checked before anything is opened."""

    maxsize: int = 4096
    overflow: Overflow = "block"
    flush_interval: float | None = None
    budget: int = 1024
    on_decode_error: Literal["count", "raise"] = "count"

    def __post_init__(self) -> None:
        if self.overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be one of {_OVERFLOW}, not {self.overflow!r}")
        if not isinstance(self.maxsize, int) or self.maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {self.maxsize!r}")
        if not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"budget must be a positive int, not {self.budget!r}")
        if self.flush_interval is not None and not self.flush_interval > 0:
            raise ValueError(
                f"flush_interval must be > 0 seconds or None, not {self.flush_interval!r}"
            )
        if self.on_decode_error not in ("count", "raise"):
            raise ValueError("on_decode_error must be 'count' or 'raise'")


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


class EventStream(Cursor, Generic[T]):  # type: ignore[misc]
    """What RingBuffer and PerfBuffer share: queueing, overflow, closing, stats.

    Subclasses check their map, build a :class:`~aioringbuf._source.Source`
    and call :meth:`_start`. The current batch (``_batch``, ``_idx``,
    ``_nbatch``) and the fast path of ``__anext__`` live in the base
    ``Cursor`` (C when built, see ``_fast``); the slow path is
    :meth:`_anext_slow`.
    """

    _kind = "stream"

    def _start(self, source: Source, map_id: int, event_type: type[T] | None,
               options: StreamOptions) -> None:
        self._source: Source = source
        self._batch: list[Any] = []
        self._idx = self._nbatch = 0
        self.event_type = event_type
        self.map_id = map_id
        self.name = source.name
        self.maxsize = options.maxsize
        self.overflow: Overflow = options.overflow
        self._flush_interval = options.flush_interval
        self._budget = options.budget
        self._strict = options.on_decode_error == "raise"
        self._closed = False

        self._entered = False
        self._pump_mode = options.overflow != "block"
        self._task_group: Any = None
        self._wait_scope: anyio.CancelScope | None = None
        self._fd_close_deferred = False
        self._on_close: list[Any] = []
        # block mode: the batch being delivered (in Cursor), where each record started
        self._starts: array.array[int] = array.array("Q")
        self._batch_end = 0
        # drop modes: the queue the background task fills
        self._queue: collections.deque[Any] = collections.deque()
        self._ready: anyio.Event | None = None  # created in __aenter__ (needs a loop)
        self._pending_error: BaseException | None = None
        # counters
        self._delivered = 0
        self._queue_drops = 0
        self._decode_errors = 0
        self._discarded = 0
        self._peak = 0
        self._final: StreamStats | None = None

    # -- construction from a pin -------------------------------------------

    @classmethod
    def from_pinned(
        cls: type[S],
        path: str,
        event_type: type[Any] | None = None,
        *,
        drop_counter_path: str | None = None,
        **options: Any,
    ) -> S:
        """Open a map pinned on bpffs, e.g. ``/sys/fs/bpf/events``.

        The drop counter is looked up at ``drop_counter_path``, by default
        ``<path>_drops`` if that exists. A ring buffer resumes at the map's
        current consumer position, wherever the last consumer stopped.
        """
        fd = _syscall.obj_get(path)
        drops_fd = None
        try:
            drops_path = drop_counter_path or path + "_drops"
            if drop_counter_path is not None or os.path.exists(drops_path):
                drops_fd = _syscall.obj_get(drops_path)
            return cls(fd, event_type, drop_counter_fd=drops_fd, **options)  # type: ignore[call-arg]
        finally:
            os.close(fd)
            if drops_fd is not None:
                os.close(drops_fd)

    # -- async context manager and iterator -------------------------------

    async def __aenter__(self: S) -> S:
        self._check_open()
        self._entered = True
        if self._pump_mode:
            self._ready = anyio.Event()
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._task_group = tg
            tg.start_soon(self._pump, name=f"aioringbuf pump for {self.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        tg, self._task_group = self._task_group, None
        if tg is not None:
            # The host task is leaving the scope anyway: cancelling it here
            # only hurries the pump, whose own exit close() already arranged.
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    def __aiter__(self: S) -> S:
        return self

    # __anext__ is Cursor's: the next event of the batch, or _anext_slow().

    async def _anext_slow(self) -> T:
        try:
            if self._pump_mode:
                return await self._next_from_queue()
            await self._fill_batch()
            self._idx = 1
            return self._batch[0]  # type: ignore[no-any-return]
        except anyio.get_cancelled_exc_class():
            if not self._entered:  # a bare `async for`: cancelling it ends it
                self.close()
            raise

    async def receive(self) -> T:
        """The next event (the same as ``await anext(stream)``)."""
        return await self.__anext__()  # type: ignore[no-any-return]

    def batches(self) -> AsyncIterator[list[T]]:
        """Iterate over lists of events, each as one drain found them.

        ::

            async for batch in stream.batches():
                for ev in batch: ...

        The same events, order, accounting and closing as ``async for ev in
        stream`` (the two may be mixed), for a fraction of the per-event
        cost: one await per batch instead of one per event.
        """
        return _Batches(self)

    def arrays(self) -> AsyncIterator[Any]:
        """Iterate over numpy structured arrays of ``dtype_of(event_type)``.

        ::

            async for arr in stream.arrays():
                hist = numpy.bincount(arr["cpu"])

        The same records, order, accounting and closing as ``batches()`` (the
        three styles may be mixed), with no Python object per record: each
        drained span is one block copy (see ``_arrays``). Needs numpy
        (``aioringbuf[arrays]``) and a fixed-size Event type (TypeError else).
        """
        from ._arrays import Arrays

        return Arrays(self)

    async def _next_batch(self) -> list[T]:
        try:
            if self._pump_mode:
                await self._next_from_queue(peek=True)
                batch = list(self._queue)
                self._queue.clear()
                self._delivered += len(batch)
                return batch
            i = self._idx
            if i >= self._nbatch:
                await self._fill_batch()
                i = 0
            batch = self._batch if i == 0 else self._batch[i:]
            self._idx = self._nbatch
            return batch
        except anyio.get_cancelled_exc_class():
            if not self._entered:
                self.close()
            raise

    # -- block mode: the iterating task drains the buffer -------------------

    async def _fill_batch(self) -> None:
        """Retire the used-up batch, then wait for and read a non-empty one (idx 0)."""
        self._check_open()
        self._retire_batch()
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            raise err
        budget = min(self._budget, self.maxsize)
        waited = False
        while True:
            self._check_open()
            src = self._source
            batch: list[Any] = []
            starts = array.array("Q")
            pos, stop, decode_errors, discarded, error = src.read(
                budget, batch, starts, self._strict)
            self._discarded += discarded
            self._decode_errors += decode_errors
            if batch:
                self._batch, self._starts, self._nbatch = batch, starts, len(batch)
                self._batch_end = pos
                self._peak = max(self._peak, len(batch))
                self._pending_error = error
                self._idx = 0
                if not waited:
                    # One yield per batch, so that others get to run while the
                    # ring stays full (a wait has yielded already). The batch
                    # is in place: a cancellation here leaves it undelivered.
                    await anyio.lowlevel.checkpoint()
                    self._check_open()  # close() in the meantime took the batch back
                return
            src.commit(pos)  # skipped discards / bad records
            if error is not None:
                raise error
            if stop == Stop.BUSY:
                await self._interruptible(anyio.sleep, _BUSY_BACKOFF)
            elif src.quiet():  # after the commit, last before sleeping: see _source
                await self._wait_readable()
            else:
                await anyio.lowlevel.checkpoint()  # more came meanwhile: read it next
            waited = True

    def _retire_batch(self) -> None:
        """Hand the delivered part of the batch's space back to the kernel."""
        if not self._nbatch:
            return
        i = self._idx
        pos = self._batch_end if i >= self._nbatch else self._starts[i]
        self._delivered += i
        if not self._source.keeps_undelivered:
            self._queue_drops += self._nbatch - i  # taken from the kernel, never delivered
        self._batch, self._starts = [], array.array("Q")
        self._idx = self._nbatch = 0
        if not self._closed:
            self._source.commit(pos)

    # -- drop modes: a background task drains, the iterating task receives ---

    async def _next_from_queue(self, peek: bool = False) -> T:
        if not self._entered:
            raise AioRingBufError(
                f"overflow={self.overflow!r} drains the ring in a background task, which "
                "needs `async with` around the stream: `async with stream: async for ...`"
            )
        while True:
            if self._queue:
                if peek:
                    return self._queue[0]  # type: ignore[no-any-return]
                self._delivered += 1
                return self._queue.popleft()  # type: ignore[no-any-return]
            if self._pending_error is not None:
                err, self._pending_error = self._pending_error, None
                raise err
            self._check_open()
            assert self._ready is not None
            if self._ready.is_set():
                self._ready = anyio.Event()
            await self._ready.wait()

    async def _pump(self) -> None:
        try:
            while not self._closed:
                src = self._source
                batch: list[Any] = []
                pos, stop, decode_errors, discarded, error = src.read(
                    self._budget, batch, None, self._strict)
                src.commit(pos)  # copied out: the kernel may reuse it
                self._discarded += discarded
                self._decode_errors += decode_errors
                if batch:
                    self._enqueue(batch)
                if error is not None:
                    self._pending_error = error
                if batch or error is not None:
                    assert self._ready is not None
                    self._ready.set()
                    await anyio.lowlevel.checkpoint()
                elif stop == Stop.BUSY:
                    await self._interruptible(anyio.sleep, _BUSY_BACKOFF)
                elif src.quiet():  # after the commit, last before sleeping: see _source
                    await self._wait_readable()
                else:
                    await anyio.lowlevel.checkpoint()
        except anyio.ClosedResourceError:
            return

    def _enqueue(self, batch: list[Any]) -> None:
        q = self._queue
        excess = len(q) + len(batch) - self.maxsize
        if excess <= 0:
            q.extend(batch)
        elif self.overflow == "drop_newest":
            q.extend(batch[: len(batch) - excess])
            self._queue_drops += excess
        else:  # drop_oldest: the oldest of queue + batch go first
            self._queue_drops += excess
            if excess >= len(q):
                q.clear()
                q.extend(batch[len(batch) - self.maxsize :])
            else:
                for _ in range(excess):
                    q.popleft()
                q.extend(batch)
        self._peak = max(self._peak, len(q))

    # -- waiting ------------------------------------------------------------

    async def _interruptible(self, fn: Any, *args: Any) -> None:
        """Await ``fn(*args)`` in a scope that close() can cancel."""
        with anyio.CancelScope() as scope:
            self._wait_scope = scope
            try:
                await fn(*args)
            finally:
                self._wait_scope = None
                if self._fd_close_deferred:
                    self._fd_close_deferred = False
                    self._source.close_fd()
        self._check_open()

    async def _wait_readable(self) -> None:
        if self._flush_interval is None:
            await self._interruptible(anyio.wait_readable, self._source.fileno())
        else:
            await self._interruptible(self._wait_readable_or_flush)

    async def _wait_readable_or_flush(self) -> None:
        with anyio.move_on_after(self._flush_interval):
            await anyio.wait_readable(self._source.fileno())

    # -- closing ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def close(self) -> None:
        """Release the fds, the mappings and (for owned objects) the BPF links.

        Idempotent. Undelivered records of a ``"block"`` ring buffer stream
        stay in the ring for the next consumer; those queued in a drop_*
        stream, or read from a perf ring but not delivered, are counted in
        ``queue_drops``. A task blocked in ``async for`` on this stream gets
        ``anyio.ClosedResourceError``.
        """
        if self._closed:
            return
        self._retire_batch()
        self._queue_drops += len(self._queue)
        self._queue.clear()
        self._final = self._snapshot()
        self._closed = True
        release_consumer(self.map_id)
        self._source.close()
        if self._wait_scope is not None:
            # A task is registered with the event loop on our fd: let it
            # unregister first, then it closes the fd (see _interruptible).
            self._fd_close_deferred = True
            self._wait_scope.cancel()
        else:
            self._source.close_fd()
        if self._ready is not None:
            self._ready.set()  # wakes receivers; the pump sees _closed and returns
        callbacks, self._on_close = self._on_close, []
        for cb in callbacks:
            cb()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"unclosed {self!r}: close it (async with, aclose()) to release its "
                "fd and mappings",
                ResourceWarning,
                stacklevel=1,
            )
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- statistics ---------------------------------------------------------

    def stats(self) -> StreamStats:
        """A snapshot of the counters (see :class:`aioringbuf.StreamStats`)."""
        if self._final is not None:
            return self._final
        return self._snapshot()

    def _snapshot(self) -> StreamStats:
        src = self._source
        cons, prod = src.positions()
        return StreamStats(
            delivered=self._delivered + self._idx,
            kernel_drops=src.kernel_drops(),
            queue_drops=self._queue_drops,
            decode_errors=self._decode_errors,
            discarded=self._discarded,
            queue_len=(self._nbatch - self._idx) + len(self._queue),
            queue_peak=self._peak,
            maxsize=self.maxsize,
            ring_size=src.size,
            avail_bytes=prod - cons,
            consumer_pos=cons,
            producer_pos=prod,
        )

    def __repr__(self) -> str:
        state = "closed" if getattr(self, "_closed", True) else "open"
        kind = getattr(getattr(self, "event_type", None), "__name__", "bytes")
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r} of {kind} ({state})>"


class _Batches(Generic[T]):
    """``stream.batches()``: the stream, one list of events per step."""

    __slots__ = ("_stream",)

    def __init__(self, stream: EventStream[T]) -> None:
        self._stream = stream

    def __aiter__(self) -> _Batches[T]:
        return self

    async def __anext__(self) -> list[T]:
        return await self._stream._next_batch()


def __getattr__(name: str) -> Any:
    # RingBuffer used to live here; keep `from ._stream import RingBuffer` working.
    if name == "RingBuffer":
        from ._ringbuf import RingBuffer

        return RingBuffer
    raise AttributeError(name)
