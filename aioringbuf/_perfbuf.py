"""PerfBuffer: a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` as a stream.

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
from typing import TYPE_CHECKING, Any, TypeVar

from ._options import StreamOptions
from ._queued import QueuedStream, make_stream
from ._source import open_perf
from ._stream import RawStream, open_pinned

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import StreamKwargs

T = TypeVar("T")


class PerfBuffer(RawStream[T]):
    """Consume a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` map as ``async for`` events.

    Opens one ``PERF_COUNT_SW_BPF_OUTPUT`` perf event per CPU (``cpus``,
    default every online CPU), each with a ring of ``per_cpu_size`` bytes
    (a power of two and a multiple of the page size), installs them in
    the map, and waits on all of them through one epoll fd. Every other
    option, ``stats()`` and closing behave as for :class:`RingBuffer`
    (a drop policy gives a queued stream built on a PerfBuffer),
    except that ``flush_interval`` defaults to 0.1 s (see the module doc).

    Example::

        async with obj.perf_buffer("events", Sample) as events:
            async for ev in events:   # in order per CPU
                ...
    """

    _kind = "perf event array"
    cpus: list[int]

    def __new__(  # the type is chosen here, once: see _queued.make_stream
        cls,
        map_fd: int,
        event_type: type[T] | None = None,
        *,
        per_cpu_size: int = 256 * 1024,
        cpus: Iterable[int] | None = None,
        wakeup_events: int = 1,
        watermark: int | None = None,
        drop_counter_fd: int | None = None,
        **options: Unpack[StreamKwargs],
    ) -> PerfBuffer[T] | QueuedStream[T]:
        def raw(opts: StreamOptions) -> PerfBuffer[T]:
            self: PerfBuffer[T] = super(PerfBuffer, cls).__new__(cls)
            self._closed = True  # until fully constructed: close() is then a no-op
            source = open_perf(map_fd, event_type, drop_counter_fd, per_cpu_size, cpus,
                               wakeup_events, watermark)
            self._start(source, event_type, opts)
            self.cpus = source.cpus
            return self

        opts = StreamOptions.of(dict(options), flush_interval=0.1)
        return make_stream(raw, opts)  # type: ignore[return-value]

    @classmethod
    def from_pinned(cls, path: str, event_type: type[Any] | None = None, *,
                    drop_counter_path: str | None = None,
                    **options: Any) -> PerfBuffer[Any] | QueuedStream[Any]:
        """Open a perf event array pinned on bpffs (see RingBuffer.from_pinned);
        ``options`` are PerfBuffer's."""
        return open_pinned(cls, path, event_type, drop_counter_path, options)  # type: ignore[no-any-return]
