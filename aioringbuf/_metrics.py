"""Prometheus metrics for streams and hubs, read from ``stats()`` at scrape time.

::

    from prometheus_client import CollectorRegistry, generate_latest
    import aioringbuf

    registry = CollectorRegistry()
    aioringbuf.register_metrics(events, name="exec", registry=registry)  # stream or Broadcast
    ...
    body = generate_latest(registry)

A custom collector rather than Counter/Gauge objects updated as events flow:
the hot path stays free of metrics code, and each scrape reports exactly
what ``stats()`` says at that moment, so the counters can never drift from
the stream's own accounting. Every sample carries a ``stream`` label with
the registered name. One collector serves all streams of a registry
(prometheus_client refuses two collectors with the same metric names).

A scrape from the event loop's thread (our exporter, the example web app)
reads every counter of a stream at one instant. prometheus_client's own
``start_http_server`` scrapes from another thread: the numbers are then
each right, but not necessarily from the same instant.

prometheus_client is an optional dependency (``pip install
aioringbuf[metrics]``), imported only when :func:`register` is called;
without it that call raises :class:`~aioringbuf.MissingDependencyError`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._broadcast import Broadcast, BroadcastStats
from ._errors import MissingDependencyError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

PREFIX = "aioringbuf"

# (name suffix, help, stats() field); counters get "_total" on the wire.
STREAM_COUNTERS = (
    ("events_delivered", "Events handed to the consumer.", "delivered"),
    ("events_kernel_dropped", "Events the BPF side could not write (ring full, or "
     "its own limits); absent when the program keeps no drop counter.", "kernel_drops"),
    ("events_queue_dropped", "Events dropped by the in-process queue's overflow policy.",
     "queue_drops"),
    ("decode_errors", "Records that did not decode into the event type.", "decode_errors"),
    ("events_discarded", "Records the BPF program discarded itself.", "discarded"),
)
HUB_COUNTERS = (
    ("hub_subscriptions", "Subscriptions ever made to the broadcast hub.", "subscriptions"),
    ("hub_disconnects", "Subscribers detached for falling behind (policy=disconnect).",
     "disconnects"),
    ("hub_events_delivered", "Events received by subscribers, summed over subscribers.",
     "delivered"),
    ("hub_events_dropped", "Events offered to a subscriber that it will never receive "
     "(slow-subscriber policy, or queued when it left), summed over subscribers.", "dropped"),
    ("hub_events_unobserved", "Events the hub drained while nobody was subscribed.",
     "unobserved"),
)


class StatsCollector:
    """The collector of one registry: named streams and hubs, read at scrape time."""

    def __init__(self) -> None:
        self._sources: dict[str, Any] = {}
        self._lock = threading.Lock()  # scrapes may come from another thread

    def add(self, name: str, source: Any) -> None:
        if not callable(getattr(source, "stats", None)):
            raise TypeError(f"{source!r} has no stats(): register a stream or a Broadcast")
        with self._lock:
            if name in self._sources:
                raise ValueError(f"a stream named {name!r} is already registered here")
            self._sources[name] = source

    def remove(self, name: str) -> bool:
        """Forget ``name``; True if nothing is left."""
        with self._lock:
            self._sources.pop(name, None)
            return not self._sources

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            sources = list(self._sources.items())
        readings = {}
        for name, source in sources:
            hub = source if isinstance(source, Broadcast) else None
            stream = hub.source if hub is not None else source
            try:
                stream_stats = stream.stats()
            except RuntimeError:  # exec_events() before it loaded: nothing to say yet
                stream_stats = None
            readings[name] = (stream_stats, hub.stats() if hub is not None else None)
        # Sources with metrics of their own (the shipper's publish path) add them.
        extra = [family for name, source in sources
                 for family in getattr(source, "metric_families", lambda _: [])(name)]
        return (family for family in [*self._families(readings), *extra] if family.samples)

    @staticmethod
    def _families(readings: dict[str, tuple[Any, BroadcastStats | None]]) -> list[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["stream"]

        def counter(suffix: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{suffix}", doc, labels=labels)

        def gauge(suffix: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{suffix}", doc, labels=labels)

        stream_counters = [(counter(s, doc), field) for s, doc, field in STREAM_COUNTERS]
        hub_counters = [(counter(s, doc), field) for s, doc, field in HUB_COUNTERS]
        fill = gauge("ring_fill_ratio", "Bytes waiting in the kernel ring / ring size.")
        size = gauge("ring_size_bytes", "Size of the kernel ring.")
        qlen = gauge("queue_length", "Events read from the ring, not yet delivered.")
        peak = gauge("queue_peak", "The most events ever queued: what maxsize must hold.")
        subs = gauge("hub_subscribers", "Subscribers attached to the broadcast hub now.")
        hub_q = gauge("hub_queue_length", "Events waiting in subscriber queues, summed.")

        for name, (st, hs) in readings.items():
            value = [name]
            if st is not None:
                for family, field in stream_counters:
                    v = getattr(st, field)
                    if v is not None:
                        family.add_metric(value, v)
                fill.add_metric(value, st.avail_bytes / st.ring_size if st.ring_size else 0.0)
                size.add_metric(value, st.ring_size)
                qlen.add_metric(value, st.queue_len)
                peak.add_metric(value, st.queue_peak)
            if hs is not None:
                for family, field in hub_counters:
                    family.add_metric(value, getattr(hs, field))
                subs.add_metric(value, hs.subscribers)
                hub_q.add_metric(value, hs.queued)
        return ([f for f, _ in stream_counters] + [fill, size, qlen, peak]
                + [f for f, _ in hub_counters] + [subs, hub_q])


def require_prometheus(what: str) -> Any:
    """prometheus_client, or a MissingDependencyError that says how to install it."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} need prometheus_client, which is not installed: "
            "pip install 'aioringbuf[metrics]'", name="prometheus_client"
        ) from exc
    return prometheus_client


_collectors: weakref.WeakKeyDictionary[Any, StatsCollector] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


class MetricsRegistration:
    """What :func:`register` returns: :meth:`unregister` removes the stream's metrics."""

    def __init__(self, registry: CollectorRegistry, collector: StatsCollector,
                 name: str) -> None:
        self.registry = registry
        self.collector = collector
        self.name = name

    def unregister(self) -> None:
        """Idempotent; the registry's collector goes once its last stream has."""
        with _registry_lock:
            if self.collector.remove(self.name) and _collectors.get(self.registry) is \
                    self.collector:
                del _collectors[self.registry]
                self.registry.unregister(self.collector)  # type: ignore[arg-type]


def register(source: Any, *, name: str,
             registry: CollectorRegistry | None = None) -> MetricsRegistration:
    """Export ``source``'s counters and gauges under ``stream=name``.

    ``source`` is a stream (``RingBuffer``, ``PerfBuffer``, ``exec_events()``)
    or a :class:`~aioringbuf.Broadcast`, which adds the hub's subscriber
    metrics to its source's. ``registry`` defaults to prometheus_client's
    global ``REGISTRY``. Counters equal ``stats()`` at every scrape; a
    ``kernel_drops`` of None (no drop counter in the BPF program) is left
    out rather than reported as 0.
    """
    prometheus_client = require_prometheus("aioringbuf metrics")
    if registry is None:
        registry = prometheus_client.REGISTRY
    with _registry_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = StatsCollector()
            collector.add(name, source)
            registry.register(collector)  # type: ignore[arg-type]
            _collectors[registry] = collector
        else:
            collector.add(name, source)
    return MetricsRegistration(registry, collector, name)
