"""RingBuffer: a ``BPF_MAP_TYPE_RINGBUF`` map fd as an :class:`EventStream`."""

from __future__ import annotations

from typing import Literal, TypeVar

from . import _syscall
from ._codec import check_layout
from ._elf import check_ring_size
from ._errors import UnsupportedMapError, WrongMapTypeError
from ._ring import HEADER_SIZE
from ._source import RingSource
from ._stream import EventStream, Overflow, StreamOptions, claim_consumer, release_consumer

T = TypeVar("T")

BPF_F_NUMA_NODE = 1 << 2
BPF_F_RB_OVERWRITE = 1 << 19  # newer kernels: a ring that overwrites old records


class RingBuffer(EventStream[T]):
    """Consume a ``BPF_MAP_TYPE_RINGBUF`` map as ``async for`` events.

    ``map_fd`` may come from anyone (aioringbuf's loader, another library,
    a pinned map); it is duplicated, so the caller keeps ownership of its
    own fd. ``event_type`` is an :class:`aioringbuf.Event` subclass, or
    None for raw ``bytes``. ``drop_counter_fd`` is the ``<ring>_drops``
    per-CPU map written by the BPF helpers in bpf/include/aioringbuf.bpf.h;
    without it ``stats().kernel_drops`` is None (unknown).

    Records arrive in the order they were reserved, across all CPUs.

    Example::

        async with RingBuffer(fd, Sample, maxsize=10_000) as events:
            async for ev in events:
                ...
    """

    _kind = "ring buffer"

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
        options = StreamOptions(maxsize, overflow, flush_interval, budget, on_decode_error)
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
        decode = check_layout(event_type, info.max_entries, HEADER_SIZE,
                              f"ring buffer {info.name!r}", "use a larger ring").decode
        claim_consumer(info, self._kind)
        try:
            source = RingSource(map_fd, info.name, info.max_entries, decode, drop_counter_fd)
        except BaseException:
            release_consumer(info.id)
            raise
        self._start(source, info.id, event_type, options)
