"""RingBuffer: a ``BPF_MAP_TYPE_RINGBUF`` map fd as a stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from ._options import StreamOptions
from ._queued import QueuedStream, make_stream
from ._source import open_ring
from ._stream import RawStream, open_pinned

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import StreamKwargs

T = TypeVar("T")


class RingBuffer(RawStream[T]):
    """Consume a ``BPF_MAP_TYPE_RINGBUF`` map as ``async for`` events.

    ``map_fd`` may come from anyone (aioringbuf's loader, another library,
    a pinned map); it is duplicated, so the caller keeps ownership of its
    own fd. ``event_type`` is an :class:`aioringbuf.Event` subclass, or
    None for raw ``bytes``. ``drop_counter_fd`` is the ``<ring>_drops``
    per-CPU map written by the BPF helpers in aioringbuf/include/aioringbuf.bpf.h;
    without it ``stats().kernel_drops`` is None (unknown).
    ``adaptive_wakeups=True`` says the BPF side submits with the header's
    adaptive wakeups (a ring declared ``AIORINGBUF_RINGBUF_ADAPTIVE``; the
    loader sets it when the ring has a ``<ring>_wakeup`` map): with a
    ``flush_interval``, a step that read everything then waits for the
    kernel's next wakeup (or the interval) instead of reading again at once.

    Records arrive in the order they were reserved, across all CPUs.

    ``overflow="block"`` (the default) gives a RingBuffer, drained by the
    task that iterates it; a drop policy gives a
    :class:`~aioringbuf.types.QueuedStream` built on one (see
    docs/architecture.md, "Two streams").

    Example::

        async with RingBuffer(fd, Sample, maxsize=10_000) as events:
            async for ev in events:
                ...
    """

    _kind = "ring buffer"

    def __new__(  # the type is chosen here, once: see _queued.make_stream
        cls,
        map_fd: int,
        event_type: type[T] | None = None,
        *,
        drop_counter_fd: int | None = None,
        adaptive_wakeups: bool = False,
        **options: Unpack[StreamKwargs],
    ) -> RingBuffer[T] | QueuedStream[T]:
        def raw(opts: StreamOptions) -> RingBuffer[T]:
            self: RingBuffer[T] = super(RingBuffer, cls).__new__(cls)
            self._closed = True  # until fully constructed: close() is then a no-op
            source = open_ring(map_fd, event_type, drop_counter_fd, adaptive_wakeups)
            self._start(source, event_type, opts)
            return self

        return make_stream(raw, StreamOptions.of(dict(options)))  # type: ignore[return-value]

    @classmethod
    def from_pinned(cls, path: str, event_type: type[Any] | None = None, *,
                    drop_counter_path: str | None = None,
                    **options: Unpack[StreamKwargs]) -> RingBuffer[Any] | QueuedStream[Any]:
        """Open a ring buffer pinned on bpffs, e.g. ``/sys/fs/bpf/events``.

        The drop counter is ``drop_counter_path``, by default ``<path>_drops``
        if that exists. The stream resumes at the map's current consumer
        position, wherever the last consumer stopped.
        """
        return open_pinned(cls, path, event_type, drop_counter_path, dict(options))  # type: ignore[no-any-return]
