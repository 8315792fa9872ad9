"""Broadcast: one kernel consumer, any number of subscribers.

A ring has exactly one consumer (docs/architecture.md), but an application often has
many readers of the same events: every open web page, a metrics task, a
log writer. ``Broadcast`` is that one consumer. A background task (the
*pump*, owned by ``async with``) iterates the source and offers each event
to every subscription; each subscription has its own bounded queue and its
own policy for when that queue is full::

    async with exec_events() as events, Broadcast(events) as hub:
        async with hub.subscribe(maxsize=256, policy="disconnect") as sub:
            async for ev in sub:
                ...
        print(hub.stats(), sub.stats())

Offering never waits, so a stalled subscriber holds back neither the
others nor the kernel ring; with no subscribers at all the pump still
drains the source (and counts those events as ``unobserved``) rather than
leaving the ring to fill and the BPF side to drop.

Slow-subscriber policies (the tokio ``broadcast`` channel and Redis'
output-buffer limits are the models):

* ``"drop_oldest"``: the full queue evicts its oldest event; the
  subscriber keeps going, with a gap that ``stats().dropped`` counts.
* ``"disconnect"``: the subscriber is detached: it still receives what was
  queued (a gap-free prefix), then :class:`SlowSubscriberError`.
  :meth:`Subscription.wait_disconnected` lets a task blocked elsewhere
  (in a socket send, say) learn of it at once.

Numbered subscriptions (:meth:`Broadcast.subscribe_numbered`) receive each
event with its number in the hub's stream, and a hub made with
``history=N`` replays its last N events to one that resumes after a
number it saw (``_history.py``)::

    async with Broadcast(events, history=4096) as hub:
        async with hub.subscribe_numbered(after=last_seen) as sub:
            print(sub.missed, "events were lost for good")
            async for item in sub:
                last_seen = item.seq  # item.event is the event

Each subscription's queue is the package's one
:class:`~aioringbuf._queue.OverflowQueue` (the queued stream's too): anyio's
memory-stream shape, with eviction and exact counts.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from ._errors import AioRingBufError
from ._history import History, Numbered
from ._queue import OverflowQueue

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Policy = Literal["drop_oldest", "disconnect"]
_POLICIES = ("drop_oldest", "disconnect")
State = Literal["attached", "disconnected", "ended", "closed"]


class HubSource(Protocol[T_co]):
    """What a hub reads: an async iterator with ``stats()`` (any aioringbuf stream)."""

    def __aiter__(self) -> AsyncIterator[T_co]: ...

    def stats(self) -> Any: ...


class SlowSubscriberError(AioRingBufError, anyio.BrokenResourceError):
    """The subscriber fell ``maxsize`` events behind with ``policy="disconnect"``.

    Raised by ``receive()`` once the events queued before the overflow have
    been received. Subscribe again to go on (the events in between are
    lost), or use a larger ``maxsize`` or ``policy="drop_oldest"``.
    """


class SubscriberStats(msgspec.Struct, frozen=True, kw_only=True):
    """One subscription's counters: ``offered == received + dropped + queue_len``.

    ``dropped`` counts events offered to this subscriber that it will never
    receive: evicted by ``drop_oldest``, the one that overflowed a
    ``disconnect`` subscriber, and those still queued when it was closed.
    Events its ``filter`` refused are not offered.
    """

    offered: int
    received: int
    dropped: int
    queue_len: int
    queue_peak: int  # the most events ever queued: what maxsize must hold
    maxsize: int
    policy: Policy
    state: State
    replayed: int = 0  # events from the hub's history offered at subscribe (in offered)
    missed: int = 0  # events after the asked-for number the history no longer held


class BroadcastStats(msgspec.Struct, frozen=True, kw_only=True):
    """A hub's counters, over every subscription it ever had.

    ``events`` were taken from the source; ``unobserved`` of them arrived
    while no subscription was attached. ``delivered``, ``dropped`` and
    ``queued`` add up the subscriptions' ``received``, ``dropped`` and
    ``queue_len``, closed ones included.
    """

    events: int
    unobserved: int
    subscribers: int  # attached now
    subscriptions: int  # ever made
    disconnects: int  # detached by policy="disconnect"
    delivered: int
    dropped: int
    queued: int
    history: int = 0  # events kept now for subscribers that resume


class Subscription(Generic[T]):
    """One subscriber's end of a :class:`Broadcast`: an async iterator of events.

    Made by :meth:`Broadcast.subscribe`, attached from that moment on: it is
    offered every event the hub takes from its source afterwards. Close it
    with ``async with``, :meth:`aclose` or :meth:`close` (idempotent); a
    task blocked in :meth:`receive` then gets ``anyio.ClosedResourceError``.
    Its queue is an :class:`~aioringbuf._queue.OverflowQueue` (``"disconnect"``
    is its ``"block"`` policy: a refused event detaches the subscriber).
    """

    def __init__(
        self,
        hub: Broadcast[T],
        maxsize: int,
        policy: Policy,
        filter: Callable[[T], bool] | None,
        numbered: bool = False,
    ) -> None:
        self._hub = hub
        self.numbered = numbered
        #: events after the asked-for number that were lost for good (subscribe_numbered)
        self.missed = 0
        #: the number of the last event before this subscription's first one
        self.start = hub.seq
        self._replayed = 0
        self.maxsize = maxsize
        self.policy: Policy = policy
        self._filter = filter
        self._queue: OverflowQueue[T] = OverflowQueue(
            maxsize, "block" if policy == "disconnect" else "drop_oldest")
        self._disconnect_event: anyio.Event | None = None
        self._state: State = "attached"
        self._overflowed = 0  # the event that found a "disconnect" queue full

    # -- the hub's side (called from the pump; never blocks) ----------------

    def _offer(self, event: T, item: Any) -> bool:
        """Queue ``event`` (``item``, its Numbered, for a numbered subscription) if the
        filter takes it; False: detach me (I ended)."""
        if self._state != "attached":
            return False
        flt = self._filter
        if flt is not None:
            try:
                if not flt(event):
                    return True
            except Exception as exc:  # a broken filter breaks its own subscription only
                self._end("ended", exc)
                return False
        try:
            self._queue.send_nowait(item if self.numbered else event)
        except anyio.WouldBlock:
            self._overflowed += 1
            self._end("disconnected")
            return False
        return True

    def _end(self, state: State, error: BaseException | None = None) -> None:
        """No more events: receivers get the queue, then learn why."""
        if self._state != "attached":
            return
        self._state = state
        if state == "disconnected":
            self._queue.finish(self._slow_error)
            if self._disconnect_event is not None:
                self._disconnect_event.set()
        elif error is not None:
            self._queue.finish(lambda: _broken_by(error))
        else:
            self._queue.finish()

    def _slow_error(self) -> SlowSubscriberError:
        return SlowSubscriberError(
            f"subscriber fell {self.maxsize} events behind and was disconnected "
            f"(policy='disconnect'); {self.stats().dropped} event(s) it was offered were "
            "dropped. Subscribe again, raise maxsize, or use policy='drop_oldest'"
        )

    # -- the subscriber's side ------------------------------------------------

    def receive_nowait(self) -> T:
        """The next queued event, or ``anyio.WouldBlock``.

        Raises ``anyio.EndOfStream`` when the hub has ended (its source
        ended or the hub closed) and the queue is empty,
        :class:`SlowSubscriberError` after a ``disconnect``,
        ``anyio.BrokenResourceError`` (from the source's error) if the source
        failed, ``anyio.ClosedResourceError`` once this end is closed.
        """
        return self._queue.receive_nowait()

    async def receive(self) -> T:
        """The next event, waiting for one (see :meth:`receive_nowait`)."""
        return await self._queue.receive()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._queue  # its cursor: the same fast path as a stream's

    async def __anext__(self) -> T:
        return await self._queue.__anext__()  # type: ignore[no-any-return]

    @property
    def disconnected(self) -> bool:
        """True once ``policy="disconnect"`` detached this subscriber."""
        return self._state == "disconnected"

    async def wait_disconnected(self) -> None:
        """Return when ``policy="disconnect"`` detaches this subscriber.

        For a task that is not receiving (it is stuck in a slow socket
        send, say) and should give up the moment it is dropped::

            tg.start_soon(cancel_when, sub.wait_disconnected, tg.cancel_scope)
        """
        if self._state == "disconnected":
            return
        if self._disconnect_event is None:
            self._disconnect_event = anyio.Event()
        await self._disconnect_event.wait()

    def close(self) -> None:
        """Detach and drop what is queued (counted in ``dropped``). Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._queue.close()
        self._hub._unsubscribe(self)

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_state", "closed") != "closed":
            warnings.warn(f"unclosed {self!r}: close it (async with, aclose())",
                          ResourceWarning, stacklevel=1)
            self.close()

    def stats(self) -> SubscriberStats:
        q = self._queue.statistics()
        dropped = q.dropped + self._overflowed
        return SubscriberStats(
            offered=q.received + dropped + q.current_buffer_used,
            received=q.received,
            dropped=dropped,
            queue_len=q.current_buffer_used,
            queue_peak=q.peak_buffer_used,
            maxsize=self.maxsize,
            policy=self.policy,
            state=self._state,
            replayed=self._replayed,
            missed=self.missed,
        )

    def __repr__(self) -> str:
        return (f"<Subscription {self._state}, {len(self._queue)}/{self.maxsize} queued, "
                f"policy={self.policy!r}>")


def _broken_by(error: BaseException) -> anyio.BrokenResourceError:
    exc = anyio.BrokenResourceError(f"this subscription ended with an error: {error!r}")
    exc.__cause__ = error
    return exc


class Broadcast(Generic[T]):
    """Fan one event source out to any number of :class:`Subscription` s.

    ``source`` is any aioringbuf stream (a ``RingBuffer``, ``PerfBuffer``,
    ``exec_events()``) or other async iterator with ``stats()``. The hub
    iterates it but neither enters nor closes it: wrap it in ``async with``
    to own its lifetime (a stream nobody entered closes itself when the hub
    stops iterating it, as after any bare ``async for``). Subscriptions are
    made with :meth:`subscribe`
    while the hub is entered; they can join and leave at any time.

    When the source ends, subscribers receive what is queued and then
    ``EndOfStream``; when it fails, ``anyio.BrokenResourceError`` (with the
    error as its cause), and leaving the hub's ``async with`` raises the
    error. Leaving the hub stops the pump and ends every subscription.
    """

    def __init__(self, source: HubSource[T], *, name: str | None = None,
                 history: int = 0) -> None:
        self._history: History[T] = History(history)
        self._numbered = 0  # numbered subscriptions attached
        self._number = history > 0  # make a Numbered per event (history or subscribers)
        self.source = source
        self.name = name or getattr(source, "name", None) or type(source).__name__
        self._attached: dict[int, Subscription[T]] = {}
        self._snapshot: tuple[Subscription[T], ...] | None = ()
        self._open: dict[int, Subscription[T]] = {}  # not yet closed, attached or not
        self._task_group: anyio.abc.TaskGroup | None = None
        self._pump_scope: anyio.CancelScope | None = None
        self._running = False
        self._ended = False
        self._error: BaseException | None = None
        self._events = self._unobserved = 0
        self._subscriptions = self._disconnects = 0
        self._retired_received = self._retired_dropped = 0

    # -- lifetime -------------------------------------------------------------

    async def __aenter__(self) -> Broadcast[T]:
        if self._running or self._ended:
            raise RuntimeError("a Broadcast can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._task_group = tg
        self._running = True
        tg.start_soon(self._pump, name=f"aioringbuf broadcast of {self.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._task_group = self._task_group, None
        self.close()
        if tg is not None:
            await tg.__aexit__(None, None, None)
        if self._error is not None and exc is None:
            raise self._error

    def close(self) -> None:
        """End the broadcast now: stop reading the source, end every subscription.

        Subscribers receive what is queued, then ``EndOfStream``. For a
        graceful shutdown while the hub's ``async with`` is still open (a
        server's open event streams, say); leaving it does the same.
        Idempotent.
        """
        self._end()
        if self._pump_scope is not None:
            self._pump_scope.cancel()

    def _end(self, error: BaseException | None = None) -> None:
        """No more events: detach everyone (they drain, then learn why)."""
        if self._ended:
            return
        self._ended = True
        self._running = False
        self._error = error
        attached, self._attached = self._attached, {}
        self._snapshot = None
        for sub in attached.values():
            sub._end("ended", error)

    async def _pump(self) -> None:
        error: BaseException | None = None
        with anyio.CancelScope() as self._pump_scope:
            if self._ended:  # closed before this task first ran
                return
            try:
                batches = getattr(self.source, "batches", None)
                if batches is not None:  # one await per drained batch, not per event
                    async for batch in batches():
                        for event in batch:
                            self._fan_out(event)
                else:
                    async for event in self.source:
                        self._fan_out(event)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                pass  # the source was closed: that is its end
            except Exception as exc:
                error = exc
            self._end(error)

    def _fan_out(self, event: T) -> None:
        self._events += 1
        item = None
        if self._number:
            item = Numbered(self._events, event)
            self._history.kept.append(item)  # maxlen 0 (no history): keeps nothing
        subs = self._snapshot
        if subs is None:
            subs = self._snapshot = tuple(self._attached.values())
        if not subs:
            self._unobserved += 1
            return
        for sub in subs:
            if not sub._offer(event, item):
                self._detach(sub)

    def _detach(self, sub: Subscription[T]) -> None:
        """Stop offering events to ``sub`` (it ended: disconnected, filter failed)."""
        if self._attached.pop(id(sub), None) is not None:
            self._snapshot = None
            self._count_numbered(sub, -1)
            if sub.disconnected:
                self._disconnects += 1

    # -- subscribing ----------------------------------------------------------

    def subscribe(
        self,
        *,
        maxsize: int = 1024,
        policy: Policy = "drop_oldest",
        filter: Callable[[T], bool] | None = None,
    ) -> Subscription[T]:
        """A new subscription, offered every event the hub takes from now on.

        ``maxsize`` bounds its queue; ``policy`` says what happens when the
        queue is full (see the module doc). ``filter``, if given, runs in
        the hub's task for each event and decides which ones are offered:
        refused events take no queue space and are never counted as drops.
        It must be quick and must not block; if it raises, this subscription
        ends with that error (as ``anyio.BrokenResourceError``).

        Use it as an async context manager (or close it) so that it detaches.
        """
        sub: Subscription[T] = self._new(maxsize, policy, filter, numbered=False)
        self._attach(sub)
        return sub

    def subscribe_numbered(
        self,
        *,
        after: int | None = None,
        maxsize: int = 1024,
        policy: Policy = "drop_oldest",
        filter: Callable[[T], bool] | None = None,
        max_replay: int | None = None,
    ) -> Subscription[Numbered[T]]:
        """Like :meth:`subscribe`, but each event comes as ``Numbered(seq, event)``.

        Numbers count the hub's events from 1 (see :attr:`seq`, :attr:`epoch`).
        With ``after``, the number of the last event the subscriber saw, it
        resumes: the events after it that the history (``history=N``) still
        holds are offered first, in order, then the new ones, with no gap and
        no repeat between the two; ``sub.missed`` says how many events after
        ``after`` are not replayed (exact). ``after=0`` asks for all that is
        kept. At most ``max_replay`` events are replayed (default ``maxsize``;
        older ones count as missed): a replay the queue cannot hold would only
        drop or disconnect at once. The replay is offered like any event:
        through ``filter``, into the queue. ``ValueError`` if ``after`` is not
        a number of this hub (negative, or beyond :attr:`seq`).
        """
        limit = maxsize if max_replay is None else max_replay
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"max_replay must be an int >= 0, not {max_replay!r}")
        missed, replay = (0, []) if after is None else \
            self._history.since(after, self._events, limit)
        sub: Subscription[Numbered[T]] = self._new(  # type: ignore[assignment]
            maxsize, policy, filter, numbered=True)
        sub.missed = missed
        sub.start = self._events - len(replay)
        sub._replayed = len(replay)
        for item in replay:  # no await in between: the live events follow the replay
            if not sub._offer(item.event, item):  # type: ignore[arg-type]
                break  # a "disconnect" queue overflowed, or the filter failed
        if sub._state == "attached":
            self._attach(sub)  # type: ignore[arg-type]
        elif sub.disconnected:  # its replay overflowed it: never attached
            self._disconnects += 1
        return sub

    @property
    def seq(self) -> int:
        """The number of the newest event the hub took (0 before the first)."""
        return self._events

    @property
    def epoch(self) -> str:
        """Random hex, made with the hub: names the stream its numbers count in.

        A number saved with another epoch (another hub, an earlier run of
        the server) says nothing about this hub's events: resume with
        ``after=0`` and report an unknown gap, rather than trust it.
        """
        return self._history.epoch

    @property
    def history(self) -> int:
        """How many past events the hub keeps for subscribers that resume."""
        return self._history.size

    def _new(self, maxsize: int, policy: Policy, filter: Callable[[T], bool] | None,
             numbered: bool) -> Subscription[T]:
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, not {policy!r}")
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
        if not self._running and not self._ended:
            raise RuntimeError("enter the hub first: `async with Broadcast(source) as hub:`")
        sub = Subscription(self, maxsize, policy, filter, numbered)
        self._subscriptions += 1
        self._open[id(sub)] = sub
        return sub

    def _attach(self, sub: Subscription[T]) -> None:
        if self._ended:
            sub._end("ended", self._error)
        else:
            self._attached[id(sub)] = sub
            self._snapshot = None
            self._count_numbered(sub, +1)

    def _count_numbered(self, sub: Subscription[Any], change: int) -> None:
        if sub.numbered:
            self._numbered += change
            self._number = self._numbered > 0 or self._history.size > 0

    def _unsubscribe(self, sub: Subscription[T]) -> None:
        """``sub`` closed: detach it, and fold its counters into the hub's totals."""
        if self._attached.pop(id(sub), None) is not None:
            self._snapshot = None
            self._count_numbered(sub, -1)
        if self._open.pop(id(sub), None) is not None:
            st = sub.stats()
            self._retired_received += st.received
            self._retired_dropped += st.dropped

    # -- statistics -----------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """How many subscriptions are attached now."""
        return len(self._attached)

    def stats(self) -> BroadcastStats:
        live = [s.stats() for s in self._open.values()]
        return BroadcastStats(
            events=self._events,
            unobserved=self._unobserved,
            subscribers=len(self._attached),
            subscriptions=self._subscriptions,
            disconnects=self._disconnects,
            delivered=self._retired_received + sum(s.received for s in live),
            dropped=self._retired_dropped + sum(s.dropped for s in live),
            queued=sum(s.queue_len for s in live),
            history=len(self._history.kept),
        )

    def __repr__(self) -> str:
        state = "running" if self._running else ("ended" if self._ended else "not started")
        return f"<Broadcast of {self.name!r} ({state}, {len(self._attached)} subscribers)>"
