"""``GET /events``: one hub subscription per client, written as Server-Sent Events.

The subscription is made *before* the response headers go out, so a client
that has the headers (``EventSource.onopen``, or httpx returning the
response) receives every exec from then on. The client's filter runs
here, in its own task, on what it receives: the hub's pump only queues,
so no filter can slow the other clients or the kernel consumer. The
queue (``--queue-size``) therefore holds events before filtering.

Messages: ``event: exec`` with the event as JSON and its ``id:``
(``resume.py``); ``event: dropped`` with the number of events this client
lost to ``policy=drop_oldest`` since the last message; a ``: keepalive``
comment every 15 s of silence. The first message carries the id of the
position the stream starts after, so a client that reconnects before any
event still resumes where it subscribed.

A client that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``)
first receives the events after that id that the hub's history
(``--history``) still holds, at most half of ``--queue-size`` of them,
then the live ones: no gap, no repeat. When these are not all of them, the first message is ``event:
missed`` with ``{"missed": N, "exact": true}``: N events (counted before
this client's filter: they are gone, so nobody can say which would have
matched) are lost. ``"exact": false`` says the id was from an earlier run
of the server: N is then what this run lost of its own events, and more
were lost before it (the events of the old run after the id, and the
execs while no server ran). The client's filter applies to the replay too.
Ids of filtered-out events are not sent one by one: a write ends with the
id of the last event the client's filter looked at, and so does a
keepalive, so a reconnect does not replay what this client already passed.

A client that stops reading fills its TCP buffers, then its queue in the
hub. With ``policy=disconnect`` (the default) the hub detaches it and this
endpoint closes the connection at once, even if it is stuck in a send; the
browser's EventSource reconnects by itself and the page says that events
were missed. ASGI has no message to abort a response, so closing is done
the one way it allows: return without finishing the body, after asking the
server (``app.state.abort_connection``, which ``app.Server`` provides) to
reset the connection: a plain close would first wait for the client to
read the megabytes already in the socket buffers, which it may never do.
uvicorn logs an unfinished response as an error, which ``app.py`` turns
into an info line of ours.

At shutdown the hub closes: every stream sends what its client was queued
and ends. One stuck writing to a stalled client is cut the same way after
:attr:`Shutdown.grace` seconds, or at once after a second Ctrl-C, so the
server never waits on a client that does not read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from events import EventEncoder, filter_from_query
from resume import Resume, event_id, resume_point
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from aioringbuf import Broadcast, SlowSubscriberError
from aioringbuf.types import Numbered, Subscription

HEARTBEAT = 15.0  # seconds of silence before a keepalive comment
MAX_BATCH = 256  # events per write
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # tell a reverse proxy not to buffer the stream
]
POLICIES = ("disconnect", "drop_oldest")
Filter = Callable[[Any], bool]

log = logging.getLogger("aioringbuf.web")


RETRY_AFTER = 10  # seconds a client refused for too many streams should wait


class StreamLimits:
    """How many event streams may be open: in all, and from one client address.

    Each open stream holds a connection, a hub subscription and its queue;
    without a cap, anyone who can connect can open thousands and make every
    event (and every ``/stats``) cost thousands of offers. Behind a reverse
    proxy every client has the proxy's address: raise the per-client cap.
    """

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: dict[str, int] = {}  # address -> streams; never more than `total` keys
        self._count = 0

    def acquire(self, client: str) -> str | None:
        """Take a slot for ``client``; None if taken, else why not (for the 429)."""
        if self._count >= self.total:
            return f"{self.total} event streams are open, the most this server allows"
        mine = self._open.get(client, 0)
        if mine >= self.per_client:
            return f"{mine} event streams are open from {client}, the most allowed from one address"
        self._open[client] = mine + 1
        self._count += 1
        return None

    def release(self, client: str) -> None:
        left = self._open[client] - 1
        if left:
            self._open[client] = left
        else:
            del self._open[client]
        self._count -= 1


class Shutdown:
    """How the server ends open streams (``app.Server`` drives it; see the module doc)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.begun = anyio.Event()  # the hub is closed: streams end after their queue
        self.forced = anyio.Event()  # a second Ctrl-C: cut the ones still writing, now

    async def wait_overdue(self) -> None:
        """Return when a stream still open at shutdown is to be cut."""
        await self.begun.wait()
        with anyio.move_on_after(self.grace):
            await self.forced.wait()


def _unwrapped(accept: Filter, unwrap: Callable[[Any], Any]) -> Filter:
    return lambda item: accept(unwrap(item))


def _body(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


class EventsEndpoint:
    """The ASGI app behind ``/events``; it finds ``hub`` and ``shutdown`` in ``app.state``."""

    def __init__(self, encoder: EventEncoder, maxsize: int, policy: str,
                 limits: StreamLimits, unwrap: Callable[[Any], Any] | None = None) -> None:
        self.unwrap = unwrap  # the ExecEvent inside a hub's item (--nats: a FleetEvent)
        self.encoder = encoder
        self.maxsize = maxsize
        self.policy = policy
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        if request.method != "GET":
            await PlainTextResponse("only GET\n", 405)(scope, receive, send)
            return
        hub: Broadcast[Any] = request.app.state.hub
        try:
            accept = filter_from_query(request.query_params)
            policy = request.query_params.get("policy", self.policy)
            if policy not in POLICIES:
                raise ValueError(f"policy must be one of {POLICIES}")
            resume = resume_point(request, hub.epoch, hub.seq)
        except ValueError as exc:
            await PlainTextResponse(f"{exc}\n", 400)(scope, receive, send)
            return
        address = request.client.host if request.client else "?"
        refused = self.limits.acquire(address)
        if refused is not None:
            await PlainTextResponse(f"429 Too Many Requests: {refused}; retry later\n", 429,
                                    headers={"retry-after": str(RETRY_AFTER)})(
                scope, receive, send)
            return
        try:
            outcome = await self._subscribed(request, accept, policy, resume, receive, send)
        finally:
            self.limits.release(address)
        if outcome is not None:
            await self._finish(request, outcome, send)

    async def _subscribed(self, request: Request, accept: Filter | None, policy: str,
                          resume: Resume, receive: Any, send: Any) -> str | None:
        hub: Broadcast[Any] = request.app.state.hub
        shutdown: Shutdown = request.app.state.shutdown
        # No await since resume_point() read hub.seq: the position is still valid.
        # At most half the queue is replayed: a client that reconnects must
        # still have room for the live events while it reads the replay.
        async with hub.subscribe_numbered(after=resume.after, maxsize=self.maxsize,
                                          policy=policy, max_replay=self.maxsize // 2) as sub:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            opening = [b"retry: 2000\n"]
            if sub.missed or not resume.exact:
                opening.append(b'event: missed\ndata: {"missed": %d, "exact": %s}\n\n'
                               % (sub.missed, b"true" if resume.exact else b"false"))
            opening.append(b"id: %s\n: subscribed\n\n" % event_id(hub.epoch, sub.start))
            await send(_body(b"".join(opening)))
            return await self._serve(sub, accept, hub.epoch, shutdown, receive, send)

    async def _finish(self, request: Request, outcome: str, send: Any) -> None:
        scope = request.scope
        if outcome in ("dropped", "cut"):
            client = request.client
            who = f"{client.host}:{client.port}" if client else "?"
            if outcome == "dropped":
                log.info("dropped slow client %s: it fell %d events behind", who, self.maxsize)
            else:
                log.info("closed the event stream of %s: it was not reading at shutdown", who)
            abort = getattr(request.app.state, "abort_connection", None)
            if abort is not None and scope.get("client"):
                abort(tuple(scope["client"]))
            return  # the response stays unfinished: the connection is done
        if outcome == "ended":  # the hub ended: the server is shutting down
            await send(_body(b"", more=False))

    async def _serve(self, sub: Subscription[Numbered[Any]], accept: Filter | None,
                     epoch: str, shutdown: Shutdown, receive: Any, send: Any) -> str:
        """Stream until the client leaves ("left"), is dropped, the hub ends ("ended"),
        or shutdown cuts a stream stuck writing ("cut")."""
        outcome = "ended"
        async with anyio.create_task_group() as tg:

            async def client_left() -> None:
                nonlocal outcome
                while (await receive())["type"] != "http.disconnect":
                    pass
                outcome = "left"
                tg.cancel_scope.cancel()

            async def dropped() -> None:  # also while we are stuck in send()
                nonlocal outcome
                await sub.wait_disconnected()
                outcome = "dropped"
                tg.cancel_scope.cancel()

            async def cut() -> None:
                nonlocal outcome
                await shutdown.wait_overdue()
                outcome = "cut"
                tg.cancel_scope.cancel()

            tg.start_soon(client_left)
            tg.start_soon(dropped)
            tg.start_soon(cut)
            try:
                await self._stream(sub, accept, epoch, send)
            except SlowSubscriberError:
                outcome = "dropped"
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            tg.cancel_scope.cancel()
        return outcome

    async def _stream(self, sub: Subscription[Numbered[Any]], accept: Filter | None,
                      epoch: str, send: Any) -> None:
        encode = self.encoder.sse
        if accept is not None and self.unwrap is not None:
            accept = _unwrapped(accept, self.unwrap)
        reported = 0
        sent_seq = seen_seq = sub.start  # the last id sent; the last event looked at
        quiet_until = anyio.current_time() + HEARTBEAT
        while True:
            first = None
            with anyio.move_on_after(max(0.0, quiet_until - anyio.current_time())):
                first = await sub.receive()
            if first is None:
                if seen_seq != sent_seq:
                    await send(_body(b"id: %s\n: keepalive\n\n" % event_id(epoch, seen_seq)))
                    sent_seq = seen_seq
                else:
                    await send(_body(b": keepalive\n\n"))
                quiet_until = anyio.current_time() + HEARTBEAT
                continue
            parts: list[bytes] = []
            item: Numbered[Any] | None = first
            pending: BaseException | None = None
            try:
                for _ in range(MAX_BATCH):  # bounded work between two checkpoints
                    if item is None:
                        item = sub.receive_nowait()
                    seen_seq = item.seq
                    if accept is None or accept(item.event):
                        parts += (b"id: %s\n" % event_id(epoch, seen_seq), encode(item.event))
                        sent_seq = seen_seq
                    item = None
            except anyio.WouldBlock:
                pass
            except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
                pending = exc  # after sending what came before it
            dropped = sub.stats().dropped
            if dropped > reported:
                parts.insert(0, b"event: dropped\ndata: %d\n\n" % (dropped - reported))
                reported = dropped
            if parts:
                if seen_seq != sent_seq:  # the batch ended with events filtered out
                    parts.append(b"id: %s\n\n" % event_id(epoch, seen_seq))
                    sent_seq = seen_seq
                await send(_body(b"".join(parts)))
                quiet_until = anyio.current_time() + HEARTBEAT
            else:
                await anyio.lowlevel.checkpoint()
            if pending is not None:
                raise pending
