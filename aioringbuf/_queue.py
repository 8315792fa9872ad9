"""OverflowQueue: one bounded in-process queue, with a policy for when it is full.

The one queue of the package: a queued stream's (between the task that
drains the kernel ring and the consumer) and every broadcast
subscription's. Its shape is anyio's memory object stream (``send_nowait``,
``receive``/``receive_nowait``, ``EndOfStream`` after the sender finished,
``ClosedResourceError`` after the receiver closed, ``statistics()``), with
what those streams lack: a policy for a full queue, and exact counts.

``policy``, when ``send_nowait`` finds ``maxsize`` items queued:

* ``"block"``: refuse with ``anyio.WouldBlock`` (the caller decides: a
  broadcast hub disconnects that subscriber);
* ``"drop_oldest"``: evict the oldest queued item;
* ``"drop_newest"``: drop the item being sent.

Accounting: every item sent is ``received``, ``dropped`` (by the policy, or
still queued at ``close()``) or still queued (``current_buffer_used``).

The queue is a :class:`~aioringbuf._cursor.PyCursor` (C or Python, see
``_fast``): ``async for item in queue`` hands out queued items on the same
fast path as a raw stream, one coroutine per wait rather than per item.
Items are ``_batch[_idx:]``; consumed ones are compacted away by the
sender, in amortised O(1). An in-band exception (``send_exception``, for a
stream's decode errors in strict mode) holds ``_nbatch`` back at its
position so that it is raised in order. See docs/architecture.md.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, NoReturn, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from ._fast import Cursor

T = TypeVar("T")
QueuePolicy = Literal["block", "drop_oldest", "drop_newest"]
QUEUE_POLICIES: tuple[QueuePolicy, ...] = ("block", "drop_oldest", "drop_newest")


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """An overflow queue's counters (anyio's statistics names where they exist)."""

    current_buffer_used: int
    max_buffer_size: int
    peak_buffer_used: int  # the most items ever queued at once
    received: int
    dropped: int  # by the policy, or queued when the queue was closed
    tasks_waiting_receive: int


class OverflowQueue(Cursor, Generic[T]):  # type: ignore[misc]
    """A bounded FIFO queue with an overflow policy (see the module doc)."""

    def __init__(self, maxsize: int, policy: QueuePolicy = "drop_oldest") -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
        if policy not in QUEUE_POLICIES:
            raise ValueError(f"policy must be one of {QUEUE_POLICIES}, not {policy!r}")
        self.maxsize = maxsize
        self.policy: QueuePolicy = policy
        self._batch: list[Any] = []
        self._idx = 0
        self._nbatch = 0
        # _gone + _idx is the absolute index of the next item to leave the
        # queue; items before it were received or evicted.
        self._gone = 0
        self._evicted = 0  # accepted, then evicted by drop_oldest
        self._refused = 0  # never accepted: drop_newest, or left at close
        self._peak = 0
        self._failures: collections.deque[tuple[int, BaseException]] = collections.deque()
        self._finished = False
        self._end: Callable[[], BaseException] | None = None
        self._closed = False
        self._waiter: anyio.Event | None = None
        self._waiting = 0

    # -- the sending side (never blocks) -------------------------------------

    def send_nowait(self, item: T) -> None:
        """Queue ``item``, or apply the policy if the queue is full."""
        self._check_sendable()
        b = self._batch
        i = self._idx
        if len(b) - i >= self.maxsize:
            if self.policy == "block":
                raise anyio.WouldBlock
            if self.policy == "drop_newest":
                self._refused += 1
                return
            self._idx = i = i + 1  # drop_oldest
            self._evicted += 1
        if i and 2 * i >= len(b):
            self._compact()
        b.append(item)
        self._accepted()

    def send_many(self, items: Sequence[T]) -> None:
        """``send_nowait`` for each item, in one step (under ``"block"``: all or none)."""
        n = len(items)
        if not n:
            return
        self._check_sendable()
        queued = len(self._batch) - self._idx
        excess = queued + n - self.maxsize
        if excess > 0:
            if self.policy == "block":
                raise anyio.WouldBlock
            if self.policy == "drop_newest":
                items = items[: n - excess]
                self._refused += excess
            else:  # drop_oldest: the oldest of queue + items go first
                evict = min(excess, queued)
                self._idx += evict
                self._evicted += evict
                if excess > evict:
                    items = items[excess - evict :]
                    self._refused += excess - evict
        if self._idx and 2 * self._idx >= len(self._batch):
            self._compact()
        self._batch.extend(items)
        self._accepted()

    def send_exception(self, exc: BaseException) -> None:
        """Raise ``exc`` in the receiver once the items sent before it are received.

        It takes no queue space and no policy drops it.
        """
        self._check_sendable()
        self._failures.append((self._gone + len(self._batch), exc))
        self._set_end()
        self._wake()

    def finish(self, error: Callable[[], BaseException] | None = None) -> None:
        """No more items: receivers get what is queued, then ``EndOfStream``.

        With ``error``, they get ``error()`` instead of ``EndOfStream``, at
        every receive from then on. Idempotent; the first call decides.
        """
        if self._finished:
            return
        self._finished = True
        self._end = error
        self._wake()

    def _check_sendable(self) -> None:
        if self._closed:
            raise anyio.BrokenResourceError("the receiving end of this queue is closed")
        if self._finished:
            raise anyio.ClosedResourceError("this queue was finished: nothing more is sent")

    def _accepted(self) -> None:
        self._set_end()
        n = len(self._batch) - self._idx
        if n > self._peak:
            self._peak = n
        self._wake()

    def _compact(self) -> None:
        i = self._idx
        del self._batch[:i]
        self._gone += i
        self._idx = 0

    def _set_end(self) -> None:
        """Ready items end at the first pending exception, if any."""
        n = len(self._batch)
        if self._failures:
            n = min(n, self._failures[0][0] - self._gone)
        self._nbatch = n

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    # -- the receiving side ---------------------------------------------------

    def receive_nowait(self) -> T:
        """The next item, or ``anyio.WouldBlock``.

        Raises ``anyio.EndOfStream`` (or the ``finish`` error) once the
        sender finished and everything was received, and
        ``anyio.ClosedResourceError`` once this queue is closed.
        """
        i = self._idx
        if i < self._nbatch:
            self._idx = i + 1
            return self._batch[i]  # type: ignore[no-any-return]
        self._unready()

    def _unready(self) -> NoReturn:
        """Nothing is ready: raise why (a due exception, the end, closed, or WouldBlock)."""
        if self._closed:
            raise anyio.ClosedResourceError
        failures = self._failures
        if failures and failures[0][0] <= self._gone + self._idx:
            _, exc = failures.popleft()
            self._set_end()
            raise exc
        if self._finished and self._idx >= len(self._batch):
            raise self._end() if self._end is not None else anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> T:
        """The next item, waiting for one (see :meth:`receive_nowait`)."""
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                await self._park()

    async def receive_ready(self) -> list[T]:
        """Every item ready now (waiting for at least one), as one list."""
        await anyio.lowlevel.checkpoint()
        while True:
            i, n = self._idx, self._nbatch
            if i < n:
                self._idx = n
                return self._batch[i:n]
            try:
                self._unready()
            except anyio.WouldBlock:
                await self._park()

    async def _anext_slow(self) -> T:
        # The fast path (Cursor.__anext__) found nothing ready.
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                await self._park()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None

    def __aiter__(self) -> OverflowQueue[T]:
        return self

    async def _park(self) -> None:
        # Receivers share one event, so a send wakes them all and none is forgotten.
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = anyio.Event()
        self._waiting += 1
        try:
            await waiter.wait()
        finally:
            self._waiting -= 1

    def close(self) -> None:
        """Stop receiving: queued items are dropped (counted), receivers get
        ``ClosedResourceError``, senders ``BrokenResourceError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        i = self._idx
        self._refused += max(0, len(self._batch) - i)
        self._gone += i
        self._batch.clear()
        self._idx = self._nbatch = 0
        self._failures.clear()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return max(0, len(self._batch) - self._idx)

    def statistics(self) -> QueueStats:
        return QueueStats(
            current_buffer_used=len(self),
            max_buffer_size=self.maxsize,
            peak_buffer_used=self._peak,
            received=self._gone + self._idx - self._evicted,
            dropped=self._evicted + self._refused,
            tasks_waiting_receive=self._waiting,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("finished" if self._finished else "open")
        return f"<OverflowQueue {len(self)}/{self.maxsize} {self.policy} ({state})>"
