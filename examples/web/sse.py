"""``GET /events``: one hub subscription per client, written as Server-Sent Events.

The subscription is made *before* the response headers go out, so a client
that has the headers (``EventSource.onopen``, or httpx returning the
response) receives every exec from then on. The client's filter runs
here, in its own task, on what it receives: the hub's pump only queues,
so no filter can slow the other clients or the kernel consumer. The
queue (``--queue-size``) therefore holds events before filtering.

Messages: ``event: exec`` with the event as JSON; ``event: dropped`` with
the number of events this client lost to ``policy=drop_oldest`` since the
last message; a ``: keepalive`` comment every 15 s of silence.

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
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from aioringbuf import Broadcast, SlowSubscriberError
from aioringbuf.types import Subscription

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


def _body(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


class EventsEndpoint:
    """The ASGI app behind ``/events``; it finds ``hub`` and ``shutdown`` in ``app.state``."""

    def __init__(self, encoder: EventEncoder, maxsize: int, policy: str,
                 limits: StreamLimits) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self.policy = policy
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        if request.method != "GET":
            await PlainTextResponse("only GET\n", 405)(scope, receive, send)
            return
        try:
            accept = filter_from_query(request.query_params)
            policy = request.query_params.get("policy", self.policy)
            if policy not in POLICIES:
                raise ValueError(f"policy must be one of {POLICIES}")
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
            outcome = await self._subscribed(request, accept, policy, receive, send)
        finally:
            self.limits.release(address)
        if outcome is not None:
            await self._finish(request, outcome, send)

    async def _subscribed(self, request: Request, accept: Filter | None, policy: str,
                          receive: Any, send: Any) -> str | None:
        hub: Broadcast[Any] = request.app.state.hub
        shutdown: Shutdown = request.app.state.shutdown
        async with hub.subscribe(maxsize=self.maxsize, policy=policy) as sub:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send(_body(b"retry: 2000\n: subscribed\n\n"))
            return await self._serve(sub, accept, shutdown, receive, send)

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

    async def _serve(self, sub: Subscription[Any], accept: Filter | None, shutdown: Shutdown,
                     receive: Any, send: Any) -> str:
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
                await self._stream(sub, accept, send)
            except SlowSubscriberError:
                outcome = "dropped"
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            tg.cancel_scope.cancel()
        return outcome

    async def _stream(self, sub: Subscription[Any], accept: Filter | None, send: Any) -> None:
        encode = self.encoder.sse
        reported = 0
        quiet_until = anyio.current_time() + HEARTBEAT
        while True:
            first = None
            with anyio.move_on_after(max(0.0, quiet_until - anyio.current_time())):
                first = await sub.receive()
            if first is None:
                await send(_body(b": keepalive\n\n"))
                quiet_until = anyio.current_time() + HEARTBEAT
                continue
            parts = [encode(first)] if accept is None or accept(first) else []
            pending: BaseException | None = None
            try:
                for _ in range(MAX_BATCH - 1):  # bounded work between two checkpoints
                    ev = sub.receive_nowait()
                    if accept is None or accept(ev):
                        parts.append(encode(ev))
            except anyio.WouldBlock:
                pass
            except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
                pending = exc  # after sending what came before it
            dropped = sub.stats().dropped
            if dropped > reported:
                parts.insert(0, b"event: dropped\ndata: %d\n\n" % (dropped - reported))
                reported = dropped
            if parts:
                await send(_body(b"".join(parts)))
                quiet_until = anyio.current_time() + HEARTBEAT
            else:
                await anyio.lowlevel.checkpoint()
            if pending is not None:
                raise pending
