"""QueuedStream: a raw stream drained by a task of its own into an overflow queue.

The stream of ``overflow="drop_oldest"`` / ``"drop_newest"``: built on a
:class:`~aioringbuf._stream.RawStream` (as cilium/ebpf's ``Reader`` is on
its ``RawReader``), it owns a task group whose one task (the *pump*) takes
each drained batch from the raw stream, so the kernel buffer stays empty,
and sends it into an :class:`~aioringbuf._queue.OverflowQueue` of
``maxsize``. When the queue is full its policy evicts; every eviction is
counted in ``queue_drops`` (so are records still queued when the stream
closes). The consumer iterates the queue: ``async for ev in stream`` runs
on the queue's cursor, the same fast path as a raw stream's.

Which of the two a user gets is decided once, when the stream is made
(:func:`make_stream`): no flag is consulted afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from ._arrays import QueuedArrays
from ._errors import AioRingBufError
from ._options import StreamOptions
from ._queue import OverflowQueue
from ._stats import StreamStats
from ._stream import RawStream

T = TypeVar("T")


def make_stream(make_raw: Callable[[StreamOptions], RawStream[T]],
                options: StreamOptions) -> RawStream[T] | QueuedStream[T]:
    """The raw stream for ``overflow="block"``, else a queued stream on one."""
    if options.queued:
        return QueuedStream(make_raw(options.for_pump()), options)
    return make_raw(options)


class QueuedStream(Generic[T]):
    """A stream whose kernel buffer a background task keeps empty (see the module doc).

    Needs ``async with`` (which owns the task). Public attributes it does
    not have itself come from the raw stream under it (``name``,
    ``event_type``, ``cpus`` of a perf buffer, ``enter_drops()`` of
    exec_events()).
    """

    def __init__(self, raw: RawStream[T], options: StreamOptions) -> None:
        self.raw = raw
        self.maxsize = options.maxsize
        self.overflow = options.overflow
        self._queue: OverflowQueue[T] = OverflowQueue(options.maxsize, options.overflow)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.raw, name)

    # -- lifetime -------------------------------------------------------------

    async def __aenter__(self) -> QueuedStream[T]:
        self._check_open()
        if self._entered:
            raise RuntimeError("this stream was already entered")
        self._entered = True
        try:
            await self.raw.__aenter__()
            tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            self.close()
            raise
        self._task_group = tg
        tg.start_soon(self._pump, name=f"aioringbuf pump for {self.raw.name}")
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

    async def _pump(self) -> None:
        raw, queue = self.raw, self._queue
        while True:
            try:
                batch = await raw._next_batch()
            except anyio.ClosedResourceError:
                return
            except anyio.BrokenResourceError as exc:  # the raw stream cannot go on
                if not queue.closed:
                    queue.finish(lambda exc=exc: _broken(exc))
                return
            except Exception as exc:  # a decode error (strict): raised in order
                if queue.closed:
                    return
                queue.send_exception(exc)
                continue
            try:
                queue.send_many(batch)
            except anyio.BrokenResourceError:
                return  # closed meanwhile

    def close(self) -> None:
        """Close the queue (what it holds counts in ``queue_drops``) and the raw
        stream under it. Idempotent; a blocked receiver gets ClosedResourceError."""
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        self.raw.close()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def _queue_if_entered(self) -> OverflowQueue[T]:
        self._check_open()
        if not self._entered:
            raise AioRingBufError(
                f"overflow={self.overflow!r} drains the ring in a background task, which "
                "needs `async with` around the stream: `async with stream: async for ...`"
            )
        return self._queue

    # -- receiving ------------------------------------------------------------

    def __aiter__(self) -> OverflowQueue[T]:
        return self._queue_if_entered()  # the queue's cursor is the fast path

    async def __anext__(self) -> T:
        return await self._queue_if_entered().__anext__()  # type: ignore[no-any-return]

    async def receive(self) -> T:
        """The next event (the same as ``await anext(stream)``)."""
        return await self.__anext__()

    def batches(self) -> AsyncIterator[list[T]]:
        """Lists of events, each everything queued at the time (see RawStream.batches)."""
        return _QueuedBatches(self._queue_if_entered())

    def arrays(self) -> AsyncIterator[Any]:
        """Numpy arrays of ``dtype_of(event_type)``, each what is queued at the time
        (see RawStream.arrays)."""
        queue = self._queue_if_entered()
        return QueuedArrays(queue, self.raw.event_type)

    # -- statistics -----------------------------------------------------------

    def stats(self) -> StreamStats:
        """The raw stream's counters, with the queue's in place of its batch's."""
        raw = self.raw.stats()
        q = self._queue.statistics()
        return msgspec.structs.replace(
            raw,
            delivered=q.received,
            queue_drops=raw.queue_drops + q.dropped,
            queue_len=raw.queue_len + q.current_buffer_used,
            queue_peak=q.peak_buffer_used,
            maxsize=self.maxsize,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<QueuedStream {self.overflow} over {self.raw!r} ({state})>"


def _broken(cause: BaseException) -> BaseException:
    err = anyio.BrokenResourceError(f"the stream's reader stopped: {cause}")
    err.__cause__ = cause
    return err


class _QueuedBatches(Generic[T]):
    __slots__ = ("_queue",)

    def __init__(self, queue: OverflowQueue[T]) -> None:
        self._queue = queue

    def __aiter__(self) -> _QueuedBatches[T]:
        return self

    async def __anext__(self) -> list[T]:
        try:
            return await self._queue.receive_ready()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
