"""RawStream: a kernel buffer as an async iterator, drained by the iterating task.

The stream of ``overflow="block"`` (the default), and the layer a queued
stream (``_queued``) is built on: what cilium/ebpf's ``RawReader`` is to
its ``Reader``. There is no background task. The loop is the one
docs/architecture.md describes: the task that asks for the next event
drains committed records (at most ``min(budget, maxsize)``, then yields
once to the event loop), and when the buffer is empty waits for the
kernel's wakeup with ``anyio.wait_readable`` on the source's fd (one-shot,
so a consumer that is not asking for more is never woken) or for
``flush_interval``, whichever comes first.

Space is handed back to the kernel (``Source.commit``) only for records
that were delivered: when the consumer is slow the kernel buffer fills and
the BPF side counts its drops; closing mid-batch leaves the undelivered
records in a ring buffer for the next consumer (a perf ring dies with its
consumer: they count as ``queue_drops``).

``async for ev in stream`` yields events (the cursor's fast path, see
``_cursor``); ``async for batch in stream.batches()`` yields lists of them.
"""

from __future__ import annotations

import array
import os
import warnings
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from . import _syscall
from ._arrays import Arrays
from ._fast import Cursor
from ._options import StreamOptions
from ._ring import Stop
from ._source import BUSY_BACKOFF, Source
from ._stats import StreamStats

T = TypeVar("T")
S = TypeVar("S", bound="RawStream[Any]")



class RawStream(Cursor, Generic[T]):  # type: ignore[misc]
    """What RingBuffer, PerfBuffer and exec_events() share: draining, waiting,
    closing, counting.

    A subclass builds a :class:`~aioringbuf._source.Source` and calls
    :meth:`_start` (or, to open lazily, :meth:`_setup` and later
    :meth:`_attach` from its :meth:`_open_source`). The current batch lives
    in the cursor's ``_batch``/``_idx``/``_nbatch``; :meth:`_anext_slow`
    refills it.
    """

    _kind = "stream"
    _source: Source | None

    def _setup(self, event_type: type[T] | None, options: StreamOptions) -> None:
        """Everything but the source: counters, options, the empty batch."""
        self._source = None
        self._batch: list[Any] = []
        self._idx = self._nbatch = 0
        self.event_type = event_type
        self.map_id = 0
        self.name = "?"
        self.maxsize = options.maxsize
        self.overflow = options.overflow
        self._flush_interval = options.flush_interval
        self._limit = min(options.budget, options.maxsize)
        self._strict = options.strict
        self._closed = False
        self._entered = False
        self._wait_scope: anyio.CancelScope | None = None
        self._fd_close_deferred = False
        self._starts: array.array[int] = array.array("Q")  # where each record started
        self._batch_end = 0
        self._caught_up = False  # the last step read all there was: see _wait_announced
        self._pending_error: BaseException | None = None
        self._broken: BaseException | None = None  # what the source raised: unreadable
        self._delivered = 0
        self._queue_drops = 0
        self._decode_errors = 0
        self._discarded = 0
        self._peak = 0
        self._final: StreamStats | None = None

    def _attach(self, source: Source) -> None:
        self._source = source
        self.map_id = source.map_id
        self.name = source.name

    def _start(self, source: Source, event_type: type[T] | None,
               options: StreamOptions) -> None:
        self._setup(event_type, options)
        self._attach(source)

    async def _open_source(self) -> Source:
        """The source, for a stream that opens lazily (see ExecEvents)."""
        raise anyio.ClosedResourceError

    # -- async context manager and iterator -------------------------------

    async def __aenter__(self: S) -> S:
        self._check_open()
        self._entered = True
        if self._source is None:
            await self._open_source()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self: S) -> S:
        return self

    # __anext__ is the cursor's: the next event of the batch, or _anext_slow().

    async def _anext_slow(self) -> T:
        try:
            await self._fill_batch()
        except anyio.get_cancelled_exc_class():
            if not self._entered:  # a bare `async for`: cancelling it ends it
                self.close()
            raise
        self._idx = 1
        return self._batch[0]  # type: ignore[no-any-return]

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
        return Arrays(self)

    async def _next_batch(self) -> list[T]:
        i = self._idx
        if i >= self._nbatch:
            try:
                await self._fill_batch()
            except anyio.get_cancelled_exc_class():
                if not self._entered:
                    self.close()
                raise
            i = 0
        batch = self._batch if i == 0 else self._batch[i:]
        self._idx = self._nbatch
        return batch

    # -- draining -------------------------------------------------------------

    async def _fill_batch(self) -> None:
        """Retire the used-up batch, then wait for and read a non-empty one (idx 0)."""
        src = await self._begin_fill()
        waited = await self._wait_announced(src)
        while True:
            self._check_open()
            batch: list[Any] = []
            starts = array.array("Q")
            try:
                pos, stop, decode_errors, discarded, error = src.read(
                    self._limit, batch, starts, self._strict)
            except Exception as exc:  # a corrupt ring: the next read would fail the same
                self._broken = exc
                raise
            self._discarded += discarded
            self._decode_errors += decode_errors
            if batch:
                self._batch, self._starts, self._nbatch = batch, starts, len(batch)
                self._batch_end = pos
                self._peak = max(self._peak, len(batch))
                self._pending_error = error
                self._idx = 0
                self._caught_up = stop == Stop.EMPTY or stop == Stop.BUSY
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
                await self._interruptible(anyio.sleep, BUSY_BACKOFF)
            elif src.quiet():  # after the commit, last before sleeping: see _source
                await self._wait_readable()
            else:
                await anyio.lowlevel.checkpoint()  # more came meanwhile: read it next
            waited = True

    async def _begin_fill(self) -> Source:
        """What every step that reads anew does first: refuse a closed or
        broken stream, retire the used-up batch, raise the error that ended
        it, open the source (if lazy). Returns the source."""
        self._check_open()
        if self._broken is not None:
            raise anyio.BrokenResourceError(
                f"{self._kind} {self.name!r} cannot be read any more: {self._broken}"
            ) from self._broken
        self._retire_batch()
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            raise err
        src = self._source
        if src is None:
            src = await self._open_source()
        return src

    def _retire_batch(self) -> None:
        """Hand the delivered part of the batch's space back to the kernel."""
        if not self._nbatch:
            return
        src = self._source
        assert src is not None
        i = self._idx
        pos = self._batch_end if i >= self._nbatch else self._starts[i]
        self._delivered += i
        if not src.keeps_undelivered:
            self._queue_drops += self._nbatch - i  # taken from the kernel, never delivered
        self._batch, self._starts = [], array.array("Q")
        self._idx = self._nbatch = 0
        if not self._closed:
            src.commit(pos)

    # -- steps for consumers that copy records out themselves (arrays()) -----

    def _rest_span(self) -> tuple[int, int, int] | None:
        """``(start, end, count)`` of the current batch's undelivered records, or None."""
        i = self._idx
        if i >= self._nbatch:
            return None
        return self._starts[i], self._batch_end, self._nbatch - i

    def _count_skipped(self, discarded: int, decode_errors: int) -> None:
        self._discarded += discarded
        self._decode_errors += decode_errors

    def _hold(self, count: int, start: int, end: int, error: BaseException | None) -> None:
        """Make ``count`` records read from ``start`` to ``end`` the current batch,
        undelivered and with no events to index, and ``error`` the one that
        follows them: closing or stats meanwhile count them as undelivered."""
        self._batch, self._starts, self._nbatch, self._idx = [], array.array("Q", [start]), count, 0
        self._batch_end = end
        self._peak = max(self._peak, count)
        self._pending_error = error

    def _hold_as_events(self) -> None:
        """The held records as an event batch any style can take next, decoded
        again from the ring, where they still are (a step that did not finish)."""
        assert self._source is not None
        events: list[Any] = []
        starts: array.array[int] = array.array("Q")
        self._source.reread(self._starts[0], self._batch_end, events, starts)
        self._batch, self._starts, self._nbatch, self._idx = events, starts, len(events), 0

    def _deliver_all(self) -> None:
        """The rest of the current batch is delivered: its space goes back now."""
        self._idx = self._nbatch
        self._retire_batch()

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
                    assert self._source is not None
                    self._source.close_fd()
        self._check_open()

    async def _wait_announced(self, src: Source) -> bool:
        """Where a step on a ring written with adaptive submits (and given a
        flush_interval) begins: if the last step read all there was, sleep
        until the kernel announces more, or flush_interval passes, before
        reading again. Reading at once takes the few records written
        meanwhile, one small step after another at the producer's heels: the
        consumer spins and the producer loses a tenth of its rate
        (docs/benchmarks.md). Every step takes the announcements made so far
        (this step's read covers them). True if it waited."""
        caught_up, self._caught_up = self._caught_up, False
        ep = src.announcements()
        if ep is None or self._flush_interval is None:
            return False
        if ep.poll(0) or not caught_up:
            return False  # announced while the last step ran, or more to read anyway
        with anyio.move_on_after(self._flush_interval):
            await self._interruptible(anyio.wait_readable, ep.fileno())
        self._check_open()
        ep.poll(0)
        return True

    async def _wait_readable(self) -> None:
        if self._flush_interval is None:
            assert self._source is not None
            await self._interruptible(anyio.wait_readable, self._source.fileno())
        else:
            await self._interruptible(self._wait_readable_or_flush)

    async def _wait_readable_or_flush(self) -> None:
        assert self._source is not None
        with anyio.move_on_after(self._flush_interval):
            await anyio.wait_readable(self._source.fileno())

    # -- closing ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def close(self) -> None:
        """Release the fds, the mappings and (for owned objects) the BPF links.

        Idempotent. Undelivered records of a ring buffer stay in the ring
        for the next consumer; those read from a perf ring but not
        delivered are counted in ``queue_drops``. A task blocked in
        ``async for`` on this stream gets ``anyio.ClosedResourceError``.
        """
        if self._closed:
            return
        src = self._source
        if src is None:
            self._closed = True
            return
        self._retire_batch()
        self._final = self._snapshot()
        self._closed = True
        src.close()
        if self._wait_scope is not None:
            # A task is registered with the event loop on our fd: let it
            # unregister first, then it closes the fd (see _interruptible).
            self._fd_close_deferred = True
            self._wait_scope.cancel()
        else:
            src.close_fd()

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
        assert src is not None
        cons, prod = src.positions()
        return StreamStats(
            delivered=self._delivered + self._idx,
            kernel_drops=src.kernel_drops(),
            queue_drops=self._queue_drops,
            decode_errors=self._decode_errors,
            discarded=self._discarded,
            queue_len=self._nbatch - self._idx,
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

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __aiter__(self) -> _Batches[T]:
        return self

    async def __anext__(self) -> list[T]:
        return await self._stream._next_batch()  # type: ignore[no-any-return]


def open_pinned(cls: Any, path: str, event_type: type[Any] | None,
                drop_counter_path: str | None, options: dict[str, Any]) -> Any:
    """``cls.from_pinned``: open a map pinned on bpffs, with its drop counter.

    The drop counter is looked up at ``drop_counter_path``, by default
    ``<path>_drops`` if that exists.
    """
    fd = _syscall.obj_get(path)
    drops_fd = None
    try:
        drops_path = drop_counter_path or path + "_drops"
        if drop_counter_path is not None or os.path.exists(drops_path):
            drops_fd = _syscall.obj_get(drops_path)
        return cls(fd, event_type, drop_counter_fd=drops_fd, **options)
    finally:
        os.close(fd)
        if drops_fd is not None:
            os.close(drops_fd)
