"""Live exec events in the browser: Starlette + uvicorn over aioringbuf.

    .venv/bin/python examples/web/app.py --port 8000      # as root

then open http://127.0.0.1:8000/. Beyond loopback it needs a token, read
from a file only its owner can read (or ``$AIORINGBUF_WEB_TOKEN``), never
given on the command line::

    python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > token
    chmod 600 token
    .venv/bin/python examples/web/app.py --host 0.0.0.0 --token-file token

Routes:

* ``GET /``: a page that shows exec events live in a table (plain HTML and
  JavaScript from ``static/``: no CDN, no build step).
* ``GET /events``: the events as Server-Sent Events; query parameters
  ``pid``, ``ppid``, ``uid`` (repeatable) and ``name`` (a regex) filter
  them, ``policy=disconnect|drop_oldest`` chooses what happens to this
  client when it falls ``--queue-size`` events behind (see ``sse.py``).
  Every event has an ``id:``; a client that reconnects with
  ``Last-Event-ID`` (or ``?last_event_id=``) gets what it missed from
  the last ``--history`` events, and ``event: missed`` with the exact
  count of what is beyond them (``resume.py``).
* ``GET /metrics``: Prometheus metrics of the exec ring and the hub.

With ``--nats URL`` it shows the fleet instead: the exec events that
``aioringbuf ship`` agents publish to JetStream, with a HOST column
(``fleet.py``); it then loads nothing into this machine's kernel and needs
no root.
* ``GET /stats``: the same counters as JSON (the page shows them).

At most ``--max-streams`` event streams are open at once, and at most
``--max-streams-per-client`` from one address; beyond that ``/events``
answers 429 with ``Retry-After``. Request heads are limited to 8 KiB.
The threat model: docs/security.md.

One kernel consumer (``exec_events()``) feeds an ``aioringbuf.Broadcast``;
every client is one subscription of it, so a stalled browser tab holds
back neither the others nor the kernel ring.

Needs pip packages ``starlette``, ``uvicorn`` and ``prometheus_client``
(``pip install 'aioringbuf[web]'``), and root (or CAP_BPF + CAP_PERFMON).
Run it as a script: its neighbours ``events``, ``redact``, ``resume``,
``security`` and ``sse`` are imported by name from this directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import pathlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import msgspec
import uvicorn
from events import EventEncoder
from fleet import FleetSource, exec_of
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redact import Redactor
from security import ENV_VAR, BrowserHeaders, HeadLimit, Session, TokenAuth, allowed_hosts
from sse import POLICIES, EventsEndpoint, Shutdown, StreamLimits
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import aioringbuf
from aioringbuf import Broadcast, exec_events, register_metrics
from aioringbuf._history import MAX_HISTORY
from aioringbuf._netguard import TokenError, read_token, refuse_open_listener
from aioringbuf._ringmap import check_ring_size
from aioringbuf._ship import DEFAULT_STREAM

STATIC = pathlib.Path(__file__).resolve().parent / "static"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOPERM = 77
MAX_HEAD = 8192  # bytes of request line and headers (h11's limit; its default is 16 KiB)
log = logging.getLogger("aioringbuf.web")


def create_app(
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    redactor: Redactor | None = None,
    queue_size: int = 4096,
    history: int = 2048,
    policy: str = "disconnect",
    ring_size: int = 8 << 20,
    shutdown_timeout: float = 2.0,
    max_streams: int = 128,
    max_streams_per_client: int = 32,
    on_ready: Any = None,
    nats: list[str] | None = None,
    nats_stream: str = DEFAULT_STREAM,
) -> Starlette:
    """The ASGI app. Its lifespan attaches the exec probes and runs the hub.

    If attaching fails (no privileges, say), the error is kept in
    ``app.state.startup_error`` for :func:`main` to report in one line.
    """
    registry = CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                if nats:
                    events: Any = FleetSource(nats, nats_stream)
                    await events.open()
                else:
                    events = await stack.enter_async_context(exec_events(ring_size=ring_size))
            except aioringbuf.AioRingBufError as exc:
                app.state.startup_error = exc
                raise
            hub = await stack.enter_async_context(
                Broadcast(events, name="exec", history=history))
            registration = register_metrics(hub, name="exec", registry=registry)
            app.state.hub = hub
            app.state.events = events
            app.state.shutdown = Shutdown(grace=shutdown_timeout)
            if on_ready is not None:
                on_ready()
            try:
                yield
            finally:
                registration.unregister()

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def metrics_page(request: Request) -> Response:
        # Generated in the loop's thread: every counter from one instant.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def stats_page(request: Request) -> Response:
        body = msgspec.json.encode({"exec": request.app.state.events.stats(),
                                    "hub": request.app.state.hub.stats()})
        return Response(body, media_type="application/json")

    encoder = EventEncoder(redactor or Redactor())
    routes = [
        Route("/", page),
        Route("/events", EventsEndpoint(encoder, queue_size, policy,
                                        StreamLimits(max_streams, max_streams_per_client),
                                        unwrap=exec_of if nats else None)),
        Route("/metrics", metrics_page),
        Route("/stats", stats_page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(HeadLimit, limit=MAX_HEAD),
        Middleware(BrowserHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host)),
    ]
    if token:
        middleware.append(Middleware(TokenAuth, token=token, session=Session()))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.startup_error = None
    return app


class QuietStartupFailure:
    """ASGI wrapper: a start-up error the app reports itself is not also logged as a
    traceback by the server (Starlette sends one with ``lifespan.startup.failed``)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Any) -> None:
            if (message["type"] == "lifespan.startup.failed"
                    and self.app.state.startup_error is not None):
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, quiet)
        except aioringbuf.AioRingBufError:
            if self.app.state.startup_error is None:
                raise


class Server(uvicorn.Server):
    """uvicorn's server, but shutdown begins by ending the event streams.

    uvicorn waits for open connections to finish before it shuts down, and
    an event stream never finishes by itself: closing the hub ends every
    subscription, so each ``/events`` response completes cleanly, and one
    stuck on a client that does not read is cut (see ``sse.Shutdown``).

    A second Ctrl-C makes uvicorn stop waiting and skip the app's own
    shutdown; here it also cuts the streams still writing at once, and the
    app's shutdown (detaching the exec probes: quick) still runs, so that
    no task is left to be cancelled mid-flight.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        app.state.abort_connection = self.abort_connection

    def abort_connection(self, client: tuple[str, int]) -> None:
        """Reset the connection from ``client`` (sse.py: for clients that do not read)."""
        for connection in list(self.server_state.connections):
            if getattr(connection, "client", None) == client:
                connection.transport.abort()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)  # a signal handler: only thread-safe calls below
        shutdown = getattr(self.app.state, "shutdown", None)
        if self.force_exit and shutdown is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(shutdown.forced.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.app.state
        if getattr(state, "hub", None) is not None:
            state.hub.close()
            state.shutdown.begun.set()
        await super().shutdown(sockets=sockets)
        done = getattr(self.lifespan, "shutdown_event", None)
        if self.force_exit and done is not None and not done.is_set():
            with anyio.move_on_after(5):  # the cut streams return at once
                while self.server_state.tasks:
                    await anyio.sleep(0.01)
            await self.lifespan.shutdown()


class _NotErrorsOfOurs(logging.Filter):
    """uvicorn logs an unfinished response as an error; for /events it is our way to
    close a dropped client's connection (sse.py), which sse.py logs itself. And a
    start-up failure that main() reports in one line needs no second one."""

    QUIET = ("ASGI callable returned without completing response.",
             "Application startup failed. Exiting.")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.QUIET


def _regex(text: str) -> aioringbuf.exec.Pattern:
    """An RE2 pattern: it runs on every argv, which anyone on the machine chooses."""
    try:
        return aioringbuf.exec.Pattern(text)
    except (aioringbuf.exec.PatternError, aioringbuf.MissingDependencyError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Live exec events in the browser (SSE).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: 8000)")
    p.add_argument("--token-file", metavar="FILE",
                   help="require the token in FILE (its first line; chmod 600) on every "
                        f"route; default: ${ENV_VAR} if set. Needed to listen beyond loopback")
    p.add_argument("--token", help=argparse.SUPPRESS)  # refused: see below
    p.add_argument("--redact", type=_regex, action="append", default=[], metavar="REGEX",
                   help="also mask what REGEX matches in argv (its first group, if it has "
                        "one) with ***; repeatable")
    p.add_argument("--no-default-redaction", action="store_true",
                   help="do not mask password=, token=, --key VALUE, user:pass@ and the like")
    p.add_argument("--queue-size", type=int, default=4096,
                   help="events a client may fall behind, counted before its filter: more "
                        "than one drained batch of the ring (1024) (default: 4096)")
    p.add_argument("--history", type=int, default=2048, metavar="N",
                   help="events kept for clients that reconnect (Last-Event-ID), at most "
                        f"{MAX_HISTORY}; 0 keeps none; at most half of --queue-size is "
                        "replayed to one client (default: 2048)")
    p.add_argument("--policy", choices=POLICIES, default="disconnect",
                   help="what happens to a client that falls further behind (default: "
                        "disconnect; clients may ask for ?policy=drop_oldest)")
    p.add_argument("--ring-size", type=int, default=8 << 20,
                   help="kernel ring size in bytes, a power of two up to 512 MiB")
    p.add_argument("--max-streams", type=int, default=128, metavar="N",
                   help="event streams open at once, from everyone (default: 128)")
    p.add_argument("--max-streams-per-client", type=int, default=32, metavar="N",
                   help="event streams open at once from one address (default: 32)")
    p.add_argument("--nats", metavar="URL",
                   help="show the fleet: the events `aioringbuf ship` agents publish to this "
                        "NATS JetStream (several URLs: comma-separated), with their host, "
                        "instead of this machine's exec ring")
    p.add_argument("--nats-stream", default=DEFAULT_STREAM, metavar="NAME",
                   help=f"the JetStream stream the agents publish to (default: {DEFAULT_STREAM})")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="uvicorn's event loop (default: uvloop if installed)")
    p.add_argument("--shutdown-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="at Ctrl-C or SIGTERM, how long to wait for responses still being "
                        "written to stalled clients (default: 2); a second Ctrl-C stops at once")
    p.add_argument("--access-log", action="store_true",
                   help="log every request (off by default: URLs may carry ?token=)")
    args = p.parse_args(argv)
    if args.token is not None:
        p.error("--token would show the token to every local user (/proc/PID/cmdline): "
                f"put it in a file for --token-file (chmod 600), or in ${ENV_VAR}")
    for name in ("queue_size", "max_streams", "max_streams_per_client"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.history <= MAX_HISTORY:
        p.error(f"--history must be from 0 to {MAX_HISTORY}")
    try:
        check_ring_size(args.ring_size, "--ring-size")
        args.token = read_token(args.token_file, ENV_VAR)
    except (aioringbuf.RingSizeError, TokenError) as exc:
        p.error(str(exc))
    return args


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket for ``host`` (a name or an address) and ``port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def _say(message: object) -> None:
    print(f"web: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nats = [u.strip() for u in args.nats.split(",") if u.strip()] if args.nats else None
    try:
        if not nats:  # the fleet view loads nothing into the kernel
            aioringbuf.types.check_privileges()
    except aioringbuf.NotPrivilegedError as exc:
        _say(exc)
        return EXIT_NOPERM
    # Bind first, so that --port 0 is known before the ready line and a
    # port in use fails before anything is loaded into the kernel; then
    # look at what was bound, not at the name that was asked for.
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        _say(f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}")
        return EXIT_ERROR
    try:
        refuse_open_listener(sock.getsockname(), args.host, args.token,
                             f"give a token (--token-file FILE or ${ENV_VAR})")
    except TokenError as exc:
        sock.close()
        _say(exc)
        return EXIT_USAGE
    port = sock.getsockname()[1]
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown_host}:{port}/"
    # The token is never printed: whoever reads this log is not necessarily
    # allowed to read the stream.
    how = " (token required: open the page once as /?token=... )" if args.token else ""

    what = f"the fleet from {', '.join(nats)}" if nats else "exec probes attached"

    def ready() -> None:
        print(f"aioringbuf web: serving {url}{how} ({what}; Ctrl-C to stop)",
              file=sys.stderr, flush=True)

    app = create_app(
        token=args.token,
        host=args.host,
        redactor=Redactor(args.redact, defaults=not args.no_default_redaction),
        queue_size=args.queue_size,
        history=args.history,
        policy=args.policy,
        ring_size=args.ring_size,
        shutdown_timeout=args.shutdown_timeout,
        max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client,
        on_ready=ready,
        nats=nats,
        nats_stream=args.nats_stream,
    )
    logging.getLogger("uvicorn.error").addFilter(_NotErrorsOfOurs())
    config = uvicorn.Config(
        QuietStartupFailure(app),
        loop=args.loop,
        lifespan="on",
        access_log=args.access_log,
        log_level="info",
        # h11 (not httptools, which has no limit on a request's head) with
        # a small head: a request line and headers of at most 8 KiB.
        http="h11",
        h11_max_incomplete_event_size=MAX_HEAD,
        ws="none",  # no WebSocket routes: upgrades are refused before the app
        # Every connection costs a file descriptor: beyond the event streams
        # and some room for pages and scrapes, uvicorn answers 503.
        limit_concurrency=args.max_streams + 64,
        timeout_keep_alive=5,
        # Server.shutdown ends the event streams and cuts those stuck on
        # stalled clients after --shutdown-timeout; this bounds the wait for
        # other slow responses (a page or /metrics to a client not reading).
        timeout_graceful_shutdown=args.shutdown_timeout + 1,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # uvicorn handles SIGINT and SIGTERM itself (a second SIGINT skips the
    # waiting), and once shut down re-raises them with the handlers it found:
    # Python's default SIGINT handler raises KeyboardInterrupt, and this one
    # makes SIGTERM do the same, instead of killing the process.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        Server(config, app).run(sockets=[sock])
    except KeyboardInterrupt:  # a signal asked us to stop, and we did
        pass
    except SystemExit:  # uvicorn's exit when the app's start-up failed
        error = app.state.startup_error
        if error is None:
            raise
        _say(error)
        return EXIT_NOPERM if isinstance(error, aioringbuf.NotPrivilegedError) else EXIT_ERROR
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
