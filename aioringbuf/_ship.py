"""Shipper: exec events from a pinned ring to a NATS JetStream stream, exactly once.

The path, and where each guarantee comes from::

    pinned ring --AckedRing--> window of publishes --JetStream--> stream
      ^  consumer_pos moves only when JetStream acked, in order

* A record's ring space is handed back only after JetStream's publish ack
  for it and for every record before it, so an agent killed at any moment
  leaves the unacknowledged records in the pinned ring; the next agent
  publishes them again with the same ``Nats-Msg-Id`` (the record's key)
  and JetStream drops the ones it already has (within its duplicate window).
* Publishes are pipelined: up to ``window`` in flight. A slow or absent
  broker fills the window, then the ring, and the BPF side counts what the
  ring cannot hold (the pinned ``events_drops``), so memory stays bounded
  (``window`` + one batch) and no loss goes uncounted.
* Order: a connection delivers a prefix of what was sent, in order. Any
  failure (an error ack, no ack within ``ack_timeout``, a lost connection)
  ends the connection, and a new one republishes from the first
  unacknowledged record; nats-py's own reconnect (which would replay its
  buffer after records sent earlier were lost) is off. In a cluster, a
  message lost with a dying stream leader could be overtaken by later
  ones stored by the next leader: no new record is sent while the oldest
  in flight has waited ``stall`` seconds (well under JetStream's election
  time), and an ack seen behind an unacknowledged predecessor when a
  connection is given up is counted in ``reordered``, never hidden.

Acks are tracked here rather than by nats-py's ``publish_async``, whose
future, semaphore, random token and JSON-to-dataclass parse per message
cost more than the rest of the path: the window already is an ordered
deque of records, so each connection subscribes to one inbox, publishes
the session's ``n``-th record with reply subject ``<inbox>.<n>``, and an
ack (``_pubacks``) marks its entry and wakes the loop only when the
head of the window can move.

nats-py is asyncio only, so the shipper runs on asyncio (or uvloop).
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from ._acked import AckedRing, RingRecord
from ._errors import MissingDependencyError
from ._escape import terminal
from ._exec import DEFAULT_RING_SIZE, ExecEvent
from ._pin import DEFAULT_PIN_ROOT, PinnedExec, lock_consumer, open_pinned
from ._pubacks import read_reply

DEFAULT_STREAM = "AIORINGBUF_EXEC"
SUBJECT_PREFIX = "aioringbuf.exec"
RETENTIONS = ("limits", "interest", "workqueue")


def require_nats(what: str) -> Any:
    try:
        import nats
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs nats-py, which is not installed: pip install 'aioringbuf[nats]'",
            name="nats") from exc
    return nats


def subject_token(host: str) -> str:
    """A host name as one NATS subject token (no dots, wildcards or spaces)."""
    out = "".join(c if c.isalnum() or c in "-_" else "_" for c in host)
    return out[:128] or "_"


@dataclass
class ShipOptions:
    """Where to ship and how; see ``aioringbuf ship --help``."""

    servers: list[str]
    stream: str = DEFAULT_STREAM
    host: str = field(default_factory=socket.gethostname)
    replicas: int = 1
    retention: str = "limits"
    max_age: float | None = None  # seconds; None: keep until the other limits
    max_bytes: int | None = None
    duplicate_window: float = 120.0  # must cover an agent's restart
    window: int = 1024  # publishes in flight
    ack_timeout: float = 5.0
    stall: float = 0.5
    pin_dir: str = os.path.join(DEFAULT_PIN_ROOT, "exec")
    ring_size: int = DEFAULT_RING_SIZE
    creds: str | None = None  # a .creds file
    user: str | None = None
    password: str | None = None
    token: str | None = None
    connect_timeout: float = 2.0
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("give at least one NATS server URL")
        if self.retention not in RETENTIONS:
            raise ValueError(f"retention must be one of {RETENTIONS}, not {self.retention!r}")
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"replicas must be 1..5, not {self.replicas}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, not {self.window}")

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}.{subject_token(self.host)}"


class ShipStats(msgspec.Struct, frozen=True):
    """Counters of the path (this agent's run, except the kernel's drop counters)."""

    published: int  # publishes sent, republished ones included
    acknowledged: int  # records JetStream acked and the ring got back
    duplicates: int  # of those, acks that said JetStream had the message already
    in_flight: int
    republished: int
    reconnects: int  # connections after the first
    connected: bool
    reordered: int  # acks behind an unacked predecessor on a lost connection
    latency_count: int
    latency_sum: float  # seconds, publish to ack
    latency_p50: float | None
    latency_p99: float | None
    # the ring, in the names the stream metrics use
    delivered: int
    kernel_drops: int | None
    enter_drops: int | None
    queue_drops: int
    decode_errors: int
    discarded: int
    avail_bytes: int
    ring_size: int
    queue_len: int
    queue_peak: int


_enc = msgspec.json.Encoder()


def envelope(host: str, key: str, ev: ExecEvent) -> bytes:
    """``{"host", "key", "time_ns", "event": <the event's JSON>}``.

    The event goes in its one lossless JSON form, ``msgspec.json.encode(ev)``
    (its text is valid Unicode: see ExecEvent). ``time_ns`` is the exec's
    wall time (ns since the epoch) as this host knows it: ``ts_ns`` is
    CLOCK_MONOTONIC of the host that traced it, which means nothing on
    another machine.
    """
    return (b'{"host":%s,"key":%s,"time_ns":%d,"event":%s}'
            % (_enc.encode(host), _enc.encode(key), ev.wall_time_ns, _enc.encode(ev)))


class _SessionLost(Exception):
    """This connection cannot be trusted any more: reconnect, republish from the head."""


class _Entry:
    """One record in the window; ``acked`` is set by its ack on the current connection."""

    __slots__ = ("acked", "duplicate", "end", "headers", "payload", "sent")

    def __init__(self, rec: RingRecord, payload: bytes) -> None:
        self.end = rec.end
        self.payload = payload
        self.headers = {"Nats-Msg-Id": rec.key}
        self.acked = self.duplicate = False
        self.sent = 0.0


class Shipper:
    """Ship exec events until cancelled. ``say`` gets one-line notices for humans."""

    def __init__(self, options: ShipOptions,
                 say: Callable[[str], None] | None = None) -> None:
        require_nats("aioringbuf ship")
        self.options = options
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._pinned: PinnedExec | None = None
        self._ring: AckedRing[ExecEvent] | None = None
        self._inflight: collections.deque[_Entry] = collections.deque()
        self._awaiting: dict[str, _Entry] = {}  # reply token -> entry, this connection
        self._inbox = ""
        self._seq = 0  # reply tokens of this connection
        self._subject = options.subject
        self._buffer: collections.deque[RingRecord] = collections.deque()
        self._batch_task: asyncio.Task[list[RingRecord]] | None = None
        self._failed: BaseException | None = None
        self._wake = asyncio.Event()
        self._published = self._acknowledged = self._duplicates = self._republished = 0
        self._reconnects = self._reordered = 0
        self._sessions = 0
        self._last_error: BaseException | None = None
        self._gen = 0  # connection generation: callbacks of older ones are ignored
        self._connected = False
        self._lat: collections.deque[float] = collections.deque(maxlen=4096)
        self._lat_count = 0
        self._lat_sum = 0.0
        self._peak = 0
        self.ready = asyncio.Event()  # set once the programs are attached (pinned)

    # -- the run ----------------------------------------------------------------

    async def run(self) -> None:
        """Attach (or reattach to) the pinned programs, then ship until cancelled."""
        opts = self.options
        self._pinned = await anyio.to_thread.run_sync(open_pinned, opts.pin_dir,
                                                      opts.ring_size)
        lock = -1
        try:
            lock = lock_consumer(opts.pin_dir)
            ring = AckedRing(self._pinned.ring_fd, ExecEvent,
                             drop_counter_fd=self._pinned.drops_fd,
                             budget=min(1024, opts.window))
            how = "made" if self._pinned.created else "reattached to"
            waiting = ring.stats()
            self._say(f"aioringbuf ship: {how} the pinned exec programs at {opts.pin_dir} "
                      f"({waiting.producer_pos - waiting.acked_pos} bytes waiting in the ring)")
            await self.ship(ring)
        finally:
            self._pinned.close()
            if lock >= 0:
                os.close(lock)

    async def ship(self, ring: AckedRing[ExecEvent]) -> None:
        """Ship the records of ``ring`` (exec records) until cancelled; closes it."""
        self._ring = ring
        try:
            self.ready.set()
            await self._connect_loop()
        finally:
            if self._batch_task is not None:
                self._batch_task.cancel()
            self._final = self.stats()
            ring.close()

    async def _connect_loop(self) -> None:
        nats = require_nats("aioringbuf ship")
        opts = self.options
        backoff = 0.1
        told = False  # one notice per outage
        while True:
            self._gen += 1
            try:
                nc = await nats.connect(**self._connect_options(self._gen))
            except Exception as exc:
                if not told:
                    why = _reason(self._last_error or exc)
                    self._say(f"aioringbuf ship: waiting for NATS at {', '.join(opts.servers)} "
                              f"({why}); retrying with back-off up to "
                              f"{opts.max_backoff:g} s")
                    told = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, opts.max_backoff)
                continue
            self._sessions += 1
            if self._sessions > 1:
                self._reconnects += 1
            try:
                await self._session(nc)
            except Exception as exc:  # _SessionLost, or a JetStream API error
                what = "lost NATS" if self._connected else "NATS is not ready"
                if self._connected:
                    told = False  # this is a new outage
                    backoff = 0.1
                if not told:
                    self._say(f"aioringbuf ship: {what} ({_reason(exc)}); retrying, then "
                              "republishing from the first unacknowledged event")
                    told = True
            finally:
                self._connected = False
                self._gen += 1  # from here on, callbacks of this connection are ignored
                self._forget_connection()
                await _close_quietly(nc)
                self._failed = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, opts.max_backoff)

    def _connect_options(self, gen: int) -> dict[str, Any]:
        opts = self.options

        async def quiet(exc: Any = None) -> None:  # nats-py logs tracebacks otherwise
            if isinstance(exc, BaseException):
                self._last_error = exc
            self._wake.set()

        async def disconnected() -> None:
            if gen == self._gen and self._failed is None:
                self._failed = _SessionLost("disconnected")
            self._wake.set()

        kw: dict[str, Any] = {
            "servers": list(opts.servers),
            "allow_reconnect": False,
            "connect_timeout": opts.connect_timeout,
            "max_reconnect_attempts": 1,  # each server once more (0 would mean forever)
            "reconnect_time_wait": 0.05,
            "error_cb": quiet,
            "disconnected_cb": disconnected,
            "closed_cb": quiet,
            "name": f"aioringbuf-ship@{opts.host}",
        }
        if opts.creds:
            kw["user_credentials"] = opts.creds
        if opts.user:
            kw["user"], kw["password"] = opts.user, opts.password or ""
        if opts.token:
            kw["token"] = opts.token
        return kw

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        opts = self.options
        try:
            await js.stream_info(opts.stream)
            return
        except NotFoundError:
            pass
        await js.add_stream(api.StreamConfig(
            name=opts.stream,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            retention=api.RetentionPolicy(opts.retention),
            num_replicas=opts.replicas,
            max_age=opts.max_age,
            max_bytes=opts.max_bytes,
            duplicate_window=opts.duplicate_window,
            storage=api.StorageType.FILE,
        ))
        self._say(f"aioringbuf ship: created JetStream stream {opts.stream} "
                  f"({SUBJECT_PREFIX}.>, {opts.retention}, R{opts.replicas})")

    async def _session(self, nc: Any) -> None:
        opts = self.options
        js = nc.jetstream(timeout=opts.ack_timeout)
        await self._ensure_stream(js)
        gen = self._gen
        self._inbox = nc.new_inbox()
        self._seq = 0

        async def on_ack(msg: Any) -> None:
            if gen == self._gen:
                self._on_ack(msg)

        await nc.subscribe(self._inbox + ".*", cb=on_ack)
        self._connected = True
        self._say(f"aioringbuf ship: publishing to {opts.subject} in stream {opts.stream} "
                  f"via {nc.connected_url.netloc if nc.connected_url else '?'}")
        infl = self._inflight
        for e in list(infl):  # what the last connection left unacknowledged, in order
            self._republished += 1
            await self._send(nc, e)
        loop = asyncio.get_running_loop()
        wake = self._wake
        while True:
            wake.clear()  # first: a wakeup from here on is not lost
            self._harvest()
            if self._failed is not None:
                raise _SessionLost(_reason(self._failed))
            now = loop.time()
            if infl and now - infl[0].sent > opts.ack_timeout:
                raise _SessionLost(f"no publish ack within {opts.ack_timeout:g} s")
            while len(infl) < opts.window and (not infl or now - infl[0].sent < opts.stall):
                if not self._buffer and not self._take_batch():
                    break
                rec = self._buffer.popleft()
                e = _Entry(rec, envelope(opts.host, rec.key, rec.event))
                infl.append(e)
                await self._send(nc, e)
                if self._failed is not None:
                    break
            self._peak = max(self._peak, len(infl))
            if wake.is_set():
                continue
            timer = None
            if infl:
                age = loop.time() - infl[0].sent
                timer = loop.call_later(
                    max(0.001, opts.stall - age if age < opts.stall else opts.ack_timeout - age),
                    wake.set)
            try:
                await wake.wait()  # an ack, a batch from the ring, a failure, or the timer
            finally:
                if timer is not None:
                    timer.cancel()

    def _take_batch(self) -> bool:
        """Move a finished ring batch into the buffer, or start reading one; True if moved."""
        task = self._batch_task
        if task is None:
            assert self._ring is not None
            ring = self._ring

            async def take() -> list[RingRecord]:
                return await ring.batch()

            task = self._batch_task = asyncio.ensure_future(take())
            task.add_done_callback(lambda _: self._wake.set())
            return False
        if not task.done():
            return False
        self._batch_task = None
        self._buffer.extend(task.result())
        return bool(self._buffer)

    async def _send(self, nc: Any, e: _Entry) -> None:
        self._seq += 1
        token = str(self._seq)
        e.acked = False
        e.sent = asyncio.get_running_loop().time()
        self._awaiting[token] = e
        try:
            await nc.publish(self._subject, e.payload, reply=f"{self._inbox}.{token}",
                             headers=e.headers)
        except Exception as exc:
            raise _SessionLost(_reason(exc)) from None
        self._published += 1

    def _on_ack(self, msg: Any) -> None:
        """JetStream's reply to one publish of this connection."""
        e = self._awaiting.pop(msg.subject[len(self._inbox) + 1:], None)
        if e is None:
            return  # not ours, or answered already
        ack = read_reply(msg, self._subject)
        if isinstance(ack, str):
            self._fail(_SessionLost(ack))
            return
        e.acked = True
        e.duplicate = ack.duplicate
        infl = self._inflight
        if infl and infl[0] is e:
            self._wake.set()  # the head moved; acks behind it wait for it

    def _fail(self, exc: BaseException) -> None:
        if self._failed is None:
            self._failed = exc
        self._wake.set()

    def _forget_connection(self) -> None:
        """The connection is gone: what it did not ack is sent again on the next.

        The acked head of the window is handed back first; an entry acked
        behind an unacked one may now be stored ahead of it (see the
        module's note): counted in ``reordered``.
        """
        if self._ring is not None and not self._ring.closed:
            self._harvest()
        behind_gap = False
        for e in self._inflight:
            if not e.acked:
                behind_gap = True
            elif behind_gap:
                self._reordered += 1
            e.acked = False
        self._awaiting.clear()

    def _harvest(self) -> None:
        """Hand back, in order, the records whose publishes JetStream acknowledged."""
        infl = self._inflight
        ring = self._ring
        assert ring is not None
        now = asyncio.get_running_loop().time()
        end = None
        lat = self._lat
        while infl and infl[0].acked:
            e = infl.popleft()
            if e.duplicate:
                self._duplicates += 1
            self._acknowledged += 1
            d = now - e.sent
            lat.append(d)
            self._lat_count += 1
            self._lat_sum += d
            end = e.end
        if end is not None:
            ring.ack(end)

    # -- statistics -------------------------------------------------------------

    @property
    def acknowledged(self) -> int:
        """Events JetStream acknowledged so far (cheaper than :meth:`stats`)."""
        return self._acknowledged

    def stats(self) -> ShipStats:
        final = getattr(self, "_final", None)
        if final is not None:
            return final
        lat = sorted(self._lat)
        p50 = lat[len(lat) // 2] if lat else None
        p99 = lat[min(len(lat) - 1, len(lat) * 99 // 100)] if lat else None
        rs = self._ring.stats() if self._ring is not None else None
        pinned = self._pinned
        enter = pinned.enter_drops() if pinned is not None and pinned.enter_drops_fd >= 0 \
            else None
        return ShipStats(
            self._published, self._acknowledged, self._duplicates, len(self._inflight),
            self._republished, self._reconnects, self._connected, self._reordered,
            self._lat_count, self._lat_sum, p50, p99,
            delivered=rs.delivered if rs else 0,
            kernel_drops=rs.kernel_drops if rs else None,
            enter_drops=enter,
            queue_drops=0,
            decode_errors=rs.decode_errors if rs else 0,
            discarded=rs.discarded if rs else 0,
            avail_bytes=(rs.producer_pos - rs.acked_pos) if rs else 0,
            ring_size=rs.ring_size if rs else 0,
            queue_len=len(self._inflight) + len(self._buffer),
            queue_peak=self._peak,
        )


    def metric_families(self, name: str) -> list[Any]:
        """The publish path's metrics, for :func:`aioringbuf.register_metrics`."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        st = self.stats()
        out: list[Any] = []
        for suffix, doc, value in (
            ("ship_published", "Publishes sent to JetStream (republished ones included).",
             st.published),
            ("ship_acknowledged", "Events JetStream acknowledged (handed back to the ring).",
             st.acknowledged),
            ("ship_duplicates", "Acks in which JetStream said it had the event already.",
             st.duplicates),
            ("ship_republished", "Events published again on a new connection.", st.republished),
            ("ship_reconnects", "Connections to NATS after the first.", st.reconnects),
            ("ship_reordered", "Acks behind an unacknowledged predecessor on a lost "
             "connection.", st.reordered),
        ):
            c = CounterMetricFamily(f"aioringbuf_{suffix}", doc, labels=["stream"])
            c.add_metric([name], value)
            out.append(c)
        g = GaugeMetricFamily("aioringbuf_ship_in_flight", "Publishes awaiting their ack.",
                              labels=["stream"])
        g.add_metric([name], st.in_flight)
        out.append(g)
        g = GaugeMetricFamily("aioringbuf_ship_connected", "1 while connected to NATS.",
                              labels=["stream"])
        g.add_metric([name], int(st.connected))
        out.append(g)
        lat = SummaryMetricFamily("aioringbuf_ship_publish_latency_seconds",
                                  "From publish to JetStream's ack.", labels=["stream"])
        lat.add_metric([name], st.latency_count, st.latency_sum)
        out.append(lat)
        return out


def _reason(exc: BaseException) -> str:
    """One line for a notice. The text may come from the broker or from
    whoever can publish to our inbox (an error reply's description): it is
    cut, then escaped for the terminal."""
    text = str(exc).strip() or type(exc).__name__
    return terminal(text.splitlines()[0][:200])


async def _close_quietly(nc: Any) -> None:
    if nc is None:
        return
    try:
        with anyio.move_on_after(2):
            await nc.close()
    except Exception:
        pass
