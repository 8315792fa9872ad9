"""RingBuffer: a ring buffer map fd as an async iterator of decoded events.

The only module that awaits. Its loop is the one DESIGN.md describes:
drain committed records (a budget at a time, yielding to the event loop
between batches), and when the ring is empty wait for the kernel's wakeup
with ``anyio.wait_readable`` (one-shot, so a consumer that is not asking
for more is never woken) or for ``flush_interval``, whichever comes first.

Two ways to run, chosen by ``overflow``:

* ``"block"`` (default): the iterating task drains the ring itself, at most
  ``maxsize`` records at a time, and hands the ring space back to the
  kernel only for records it has delivered. When the consumer is slow the
  kernel ring fills and the BPF side counts its drops; closing mid-batch
  loses nothing: the undelivered records stay in the ring for the next
  consumer.
* ``"drop_oldest"`` / ``"drop_newest"``: a background task (owned by
  ``async with``) keeps the kernel ring empty and feeds a bounded queue;
  when the queue is full the policy evicts, and every eviction is counted
  in ``queue_drops`` (so are records still queued when the stream closes).
"""

from __future__ import annotations

import collections
import os
import warnings
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.lowlevel

from . import _syscall
from ._codec import decoder_for, layout_of
from ._elf import check_ring_size
from ._errors import AioRingBufError, EventLayoutError, UnsupportedMapError, WrongMapTypeError
from ._ring import HEADER_SIZE, walk
from ._ringmap import RingMemory
from ._stats import StreamStats

T = TypeVar("T")
Overflow = Literal["block", "drop_oldest", "drop_newest"]
_OVERFLOW = ("block", "drop_oldest", "drop_newest")

BPF_F_NUMA_NODE = 1 << 2
BPF_F_RB_OVERWRITE = 1 << 19  # newer kernels: a ring that overwrites old records
_BUSY_BACKOFF = 0.0002  # seconds to wait for a reserved record to be committed

# One ring, one consumer: map ids with a live RingBuffer in this process.
_consumers: set[int] = set()


class RingBuffer(Generic[T]):
    """Consume a ``BPF_MAP_TYPE_RINGBUF`` map as ``async for`` events.

    ``map_fd`` may come from anyone (aioringbuf's loader, another library,
    a pinned map); it is duplicated, so the caller keeps ownership of its
    own fd. ``event_type`` is an :class:`aioringbuf.Event` subclass, or
    None for raw ``bytes``. ``drop_counter_fd`` is the ``<ring>_drops``
    per-CPU map written by the BPF helpers in bpf/include/aioringbuf.bpf.h;
    without it ``stats().kernel_drops`` is None (unknown).

    Example::

        async with RingBuffer(fd, Sample, maxsize=10_000) as events:
            async for ev in events:
                ...
    """

    def __init__(
        self,
        map_fd: int,
        event_type: type[T] | None = None,
        *,
        maxsize: int = 4096,
        overflow: Overflow = "block",
        flush_interval: float | None = None,
        budget: int = 1024,
        drop_counter_fd: int | None = None,
        on_decode_error: Literal["count", "raise"] = "count",
    ) -> None:
        self._closed = True  # until fully constructed: close() is then a no-op
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be one of {_OVERFLOW}, not {overflow!r}")
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"budget must be a positive int, not {budget!r}")
        if flush_interval is not None and not flush_interval > 0:
            raise ValueError(f"flush_interval must be > 0 seconds or None, not {flush_interval!r}")
        if on_decode_error not in ("count", "raise"):
            raise ValueError("on_decode_error must be 'count' or 'raise'")
        info = _syscall.map_info(map_fd)
        if info.type != _syscall.BPF_MAP_TYPE_RINGBUF:
            raise WrongMapTypeError(
                f"map {info.name!r} (fd {map_fd}) is a {info.type_name} map, not a ringbuf; "
                "RingBuffer needs BPF_MAP_TYPE_RINGBUF (use PerfBuffer for perf event arrays)"
            )
        if info.flags & BPF_F_RB_OVERWRITE:
            raise UnsupportedMapError(
                f"ring buffer {info.name!r} was created with BPF_F_RB_OVERWRITE; overwrite "
                "mode rings are not supported yet: create the map without that flag"
            )
        if info.flags & ~BPF_F_NUMA_NODE:
            raise UnsupportedMapError(
                f"ring buffer {info.name!r} has map flags {info.flags:#x} aioringbuf does not know"
            )
        check_ring_size(info.max_entries)
        self._decode = decoder_for(event_type)
        if event_type is not None:
            need = layout_of(event_type).size + HEADER_SIZE if not hasattr(
                event_type, "__aioringbuf_decoder__") else 0
            if need > info.max_entries:
                raise EventLayoutError(
                    f"{event_type.__name__} needs {need} bytes per record but ring buffer "
                    f"{info.name!r} holds only {info.max_entries}: use a larger ring"
                )
        if info.id in _consumers:
            from ._errors import ConsumerBusyError

            raise ConsumerBusyError(
                f"ring buffer {info.name!r} (map id {info.id}) already has a consumer in this "
                "process; a ring has exactly one consumer: share its events with a fan-out "
                "instead of opening it twice"
            )

        self.event_type = event_type
        self.map_id = info.id
        self.name = info.name
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self._flush_interval = flush_interval
        self._budget = budget
        self._strict = on_decode_error == "raise"
        self._fd = -1
        self._drops_fd = -1
        self._mem: RingMemory | None = None
        try:
            self._fd = os.dup(map_fd)
            if drop_counter_fd is not None:
                self._drops_fd = os.dup(drop_counter_fd)
            self._mem = RingMemory(self._fd, info.max_entries)
        except BaseException:
            self._release_fds()
            raise
        _consumers.add(info.id)
        self._closed = False

        self._entered = False
        self._pump_mode = overflow != "block"
        self._task_group: Any = None
        self._wait_scope: anyio.CancelScope | None = None
        self._fd_close_deferred = False
        self._on_close: list[Any] = []
        # block mode: the batch being delivered, and where each record started
        self._batch: list[Any] = []
        self._starts: list[int] = []
        self._idx = 0
        self._nbatch = 0
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
        cls,
        path: str,
        event_type: type[T] | None = None,
        *,
        drop_counter_path: str | None = None,
        **options: Any,
    ) -> RingBuffer[T]:
        """Open a ring buffer pinned on bpffs, e.g. ``/sys/fs/bpf/events``.

        The drop counter is looked up at ``drop_counter_path``, by default
        ``<path>_drops`` if that exists. Consumption resumes at the map's
        current consumer position, wherever the last consumer stopped.
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

    # -- async context manager and iterator -------------------------------

    async def __aenter__(self) -> RingBuffer[T]:
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

    def __aiter__(self) -> RingBuffer[T]:
        return self

    async def __anext__(self) -> T:
        i = self._idx
        if i < self._nbatch:  # fast path: the current batch
            self._idx = i + 1
            return self._batch[i]  # type: ignore[no-any-return]
        try:
            if self._pump_mode:
                return await self._next_from_queue()
            return await self._next_from_ring()
        except anyio.get_cancelled_exc_class():
            if not self._entered:  # a bare `async for`: cancelling it ends it
                self.close()
            raise

    async def receive(self) -> T:
        """The next event (the same as ``await anext(stream)``)."""
        return await self.__anext__()

    # -- block mode: the iterating task drains the ring ----------------------

    async def _next_from_ring(self) -> T:
        self._check_open()
        self._retire_batch()
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            raise err
        await anyio.lowlevel.checkpoint()  # one yield per batch: others get to run
        while True:
            self._check_open()
            mem = self._mem
            assert mem is not None
            cons = mem.consumer_pos()
            batch: list[Any] = []
            starts: list[int] = []
            res = walk(mem.data, mem.base, mem.mask, cons, mem.producer_pos(),
                       min(self._budget, self.maxsize), self._decode, batch, starts, self._strict)
            self._discarded += res.discarded
            self._decode_errors += res.decode_errors
            if batch:
                self._batch, self._starts, self._nbatch = batch, starts, len(batch)
                self._batch_end = res.pos
                self._peak = max(self._peak, len(batch))
                self._pending_error = res.error
                self._idx = 1
                return batch[0]  # type: ignore[no-any-return]
            if res.pos != cons:
                mem.publish_consumer_pos(res.pos)  # skipped discards / bad records
            if res.error is not None:
                raise res.error
            if res.busy:
                await self._interruptible(anyio.sleep, _BUSY_BACKOFF)
            else:
                await self._wait_readable()

    def _retire_batch(self) -> None:
        """Return the delivered part of the batch's ring space to the kernel."""
        if not self._nbatch:
            return
        i = self._idx
        pos = self._batch_end if i >= self._nbatch else self._starts[i]
        self._delivered += i
        self._batch, self._starts = [], []
        self._idx = self._nbatch = 0
        if self._mem is not None:
            self._mem.publish_consumer_pos(pos)

    # -- drop modes: a background task drains, the iterating task receives ---

    async def _next_from_queue(self) -> T:
        if not self._entered:
            raise AioRingBufError(
                f"overflow={self.overflow!r} drains the ring in a background task, which "
                "needs `async with` around the stream: `async with stream: async for ...`"
            )
        while True:
            if self._queue:
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
                mem = self._mem
                assert mem is not None
                cons = mem.consumer_pos()
                batch: list[Any] = []
                res = walk(mem.data, mem.base, mem.mask, cons, mem.producer_pos(),
                           self._budget, self._decode, batch, None, self._strict)
                if res.pos != cons:
                    mem.publish_consumer_pos(res.pos)  # copied out: the kernel may reuse it
                self._discarded += res.discarded
                self._decode_errors += res.decode_errors
                if batch:
                    self._enqueue(batch)
                if res.error is not None:
                    self._pending_error = res.error
                if batch or res.error is not None:
                    assert self._ready is not None
                    self._ready.set()
                    await anyio.lowlevel.checkpoint()
                elif res.busy:
                    await self._interruptible(anyio.sleep, _BUSY_BACKOFF)
                else:
                    await self._wait_readable()
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
                    self._release_fds()
        self._check_open()

    async def _wait_readable(self) -> None:
        if self._flush_interval is None:
            await self._interruptible(anyio.wait_readable, self._fd)
        else:
            await self._interruptible(self._wait_readable_or_flush)

    async def _wait_readable_or_flush(self) -> None:
        with anyio.move_on_after(self._flush_interval):
            await anyio.wait_readable(self._fd)

    # -- closing ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def close(self) -> None:
        """Release the fd, the mappings and (for owned objects) the BPF links.

        Idempotent. Undelivered records of a ``"block"`` stream stay in the
        ring for the next consumer; those queued in a drop_* stream are
        counted in ``queue_drops``. A task blocked in ``async for`` on this
        stream gets ``anyio.ClosedResourceError``.
        """
        if self._closed:
            return
        self._retire_batch()
        self._queue_drops += len(self._queue)
        self._queue.clear()
        self._final = self._snapshot()
        self._closed = True
        _consumers.discard(self.map_id)
        if self._mem is not None:
            self._mem.close()
            self._mem = None
        if self._wait_scope is not None:
            # A task is registered with the event loop on our fd: let it
            # unregister first, then it closes the fd (see _interruptible).
            self._fd_close_deferred = True
            self._wait_scope.cancel()
        else:
            self._release_fds()
        if self._ready is not None:
            self._ready.set()  # wakes receivers; the pump sees _closed and returns
        callbacks, self._on_close = self._on_close, []
        for cb in callbacks:
            cb()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def _release_fds(self) -> None:
        self._fd_close_deferred = False
        for attr in ("_fd", "_drops_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                os.close(fd)

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
        mem = self._mem
        assert mem is not None
        cons, prod = mem.consumer_pos(), mem.producer_pos()
        kernel_drops = None
        if self._drops_fd >= 0:
            kernel_drops = _syscall.percpu_u64_sum(self._drops_fd)
        return StreamStats(
            delivered=self._delivered + self._idx,
            kernel_drops=kernel_drops,
            queue_drops=self._queue_drops,
            decode_errors=self._decode_errors,
            discarded=self._discarded,
            queue_len=(self._nbatch - self._idx) + len(self._queue),
            queue_peak=self._peak,
            maxsize=self.maxsize,
            ring_size=mem.size,
            avail_bytes=prod - cons,
            consumer_pos=cons,
            producer_pos=prod,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        kind = getattr(self.event_type, "__name__", "bytes")
        return f"<RingBuffer {getattr(self, 'name', '?')!r} of {kind} ({state})>"
