"""PerfBuffer: a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` as an :class:`EventStream`.

For kernels or programs that use ``bpf_perf_event_output`` rather than a
ring buffer. The differences a user sees, all from the kernel:

* **Order is per CPU.** Each CPU writes its own ring; records of one CPU
  arrive in order, records of different CPUs in no defined order (a
  ``RingBuffer`` keeps one order across CPUs).
* **Sizes are padded.** The kernel rounds each sample up so that it plus
  its 4-byte size is a multiple of 8, and reports the padded size. Fixed
  size Event types are trimmed back transparently; ``bytes`` streams and
  ``Tail[...]`` fields see the 0..7 padding bytes, which the kernel skips
  rather than zeroes (stale ring contents): put the length in the record,
  or NUL-terminate strings.
* **Losses are the kernel's to count.** A full perf ring drops the sample
  and the kernel counts it (``PERF_RECORD_LOST``; on Linux >= 6.0 also an
  exact per-event counter): ``kernel_drops`` is that count, plus the
  ``<name>_drops`` counter of ``AIORINGBUF_PERF_OUTPUT`` failures the ring
  never sees (no perf event on that CPU, record too big).
* **The rings belong to the consumer**: they are created when the stream
  opens and freed when it closes, so records not yet delivered then are
  gone (counted in ``queue_drops`` if already read from the ring).
* **Wakeups** come every ``wakeup_events`` samples (default 1, like libbpf
  and BCC) or, with ``watermark``, when that many bytes are waiting; what
  is left below the threshold waits for the next one or ``flush_interval``.
* **flush_interval defaults to 0.1 s** (a ring buffer's to None). A perf
  fd reports a wakeup once and forgets it (perf_poll clears the flag), and
  an event loop polls an fd both when the stream registers it and when it
  waits; a wakeup that lands just before the registration is used up by
  the first poll and not reported by the second. The next wakeup (the next
  sample, at wakeup_events=1) or the periodic re-check recovers the
  records: libbpf and BCC users poll with a timeout for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeVar

from . import _syscall
from ._codec import check_layout
from ._elf import check_ring_size
from ._errors import WrongMapTypeError
from ._perfring import RAW_OFFSET
from ._source import PerfSource
from ._stream import EventStream, Overflow, StreamOptions, claim_consumer, release_consumer

T = TypeVar("T")


class PerfBuffer(EventStream[T]):
    """Consume a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` map as ``async for`` events.

    Opens one ``PERF_COUNT_SW_BPF_OUTPUT`` perf event per CPU (``cpus``,
    default every online CPU), each with a ring of ``per_cpu_size`` bytes
    (a power of two and a multiple of the page size), installs them in
    the map, and waits on all of them through one epoll fd. Every other
    option, ``stats()`` and closing behave as for :class:`RingBuffer`,
    except that ``flush_interval`` defaults to 0.1 s (see the module doc).

    Example::

        async with obj.perf_buffer("events", Sample) as events:
            async for ev in events:   # in order per CPU
                ...
    """

    _kind = "perf event array"

    def __init__(
        self,
        map_fd: int,
        event_type: type[T] | None = None,
        *,
        per_cpu_size: int = 256 * 1024,
        cpus: Iterable[int] | None = None,
        wakeup_events: int = 1,
        watermark: int | None = None,
        maxsize: int = 4096,
        overflow: Overflow = "block",
        flush_interval: float | None = 0.1,
        budget: int = 1024,
        drop_counter_fd: int | None = None,
        on_decode_error: Literal["count", "raise"] = "count",
    ) -> None:
        self._closed = True  # until fully constructed: close() is then a no-op
        options = StreamOptions(maxsize, overflow, flush_interval, budget, on_decode_error)
        if not isinstance(wakeup_events, int) or wakeup_events < 1:
            raise ValueError(f"wakeup_events must be a positive int, not {wakeup_events!r}")
        if watermark is not None and not (isinstance(watermark, int) and
                                          0 < watermark < per_cpu_size):
            raise ValueError(
                f"watermark must be a number of bytes in 1..per_cpu_size-1, not {watermark!r}"
            )
        check_ring_size(per_cpu_size)
        info = _syscall.map_info(map_fd)
        if info.type != _syscall.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            raise WrongMapTypeError(
                f"map {info.name!r} (fd {map_fd}) is a {info.type_name} map, not a "
                "perf_event_array; PerfBuffer needs BPF_MAP_TYPE_PERF_EVENT_ARRAY "
                "(use RingBuffer for ring buffers)"
            )
        decode, exact = check_layout(event_type, per_cpu_size, RAW_OFFSET, "each perf ring",
                                     "use a larger per_cpu_size")
        claim_consumer(info, self._kind)
        try:
            source = PerfSource(map_fd, info.name, info.max_entries, decode, exact,
                                drop_counter_fd, per_cpu_size, cpus, wakeup_events, watermark)
        except BaseException:
            release_consumer(info.id)
            raise
        self.cpus: list[int] = source.cpus
        self._start(source, info.id, event_type, options)
