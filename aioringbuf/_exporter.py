"""``aioringbuf exporter``: exec events as Prometheus metrics.

Drains :func:`~aioringbuf.exec_events` (counting, not printing) and serves
``GET /metrics`` in Prometheus' text format, from the same event loop, so
every scrape reads the stream's counters at one instant (see ``_metrics``).
The HTTP side is a few lines over an anyio TCP listener rather than an
ASGI server: it needs no dependency beyond prometheus_client, and runs on
asyncio, uvloop and trio alike.

It binds 127.0.0.1 unless told otherwise: exec counts say what the machine
is doing. On an address other machines can reach (checked on the bound
socket, after the name was resolved) it needs a bearer token, from a
file (``--token-file``) or ``$AIORINGBUF_EXPORTER_TOKEN``, never from the
command line; Prometheus sends it with ``authorization: credentials_file``.

Whoever can connect can hold connections open: at most
``MAX_CONNECTIONS`` are served at once (more get a 503 at once), each for
at most ``REQUEST_TIMEOUT`` seconds, with a head of at most ``MAX_HEAD``
bytes. When the process runs out of file descriptors (EMFILE), accepting
pauses with a back-off and resumes once connections close, instead of
ending the exporter.
"""

from __future__ import annotations

import argparse
import errno
import hmac
import socket
import sys
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ._cli_common import BACKENDS, EXIT_ERROR, EXIT_NOPERM, EXIT_OK, _cancel_on_signals, _error
from ._errors import AioRingBufError, NotPrivilegedError
from ._exec import DEFAULT_RING_SIZE, exec_events
from ._metrics import register, require_prometheus
from ._netguard import TokenError, read_token, refuse_open_listener
from ._ringmap import check_ring_size

DEFAULT_PORT = 9437
ENV_VAR = "AIORINGBUF_EXPORTER_TOKEN"
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its request and take the answer
MAX_HEAD = 8 * 1024
MAX_CONNECTIONS = 64  # served at once; a scrape needs one
EXIT_USAGE = 2
# accept() errors that mean "no resources now": wait for connections to close
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF = (0.05, 1.0)  # first and longest pause between accept() attempts, seconds


def add_exporter_command(sub: Any) -> None:
    """Add ``aioringbuf exporter`` to the CLI's subcommands."""
    p = sub.add_parser(
        "exporter",
        help="serve exec() counters as Prometheus metrics",
        description="Count every execve()/execveat() on this machine and serve the stream's "
                    "counters at http://HOST:PORT/metrics for Prometheus.",
        epilog="Metrics: aioringbuf_events_delivered_total, aioringbuf_events_kernel_dropped_"
               "total, aioringbuf_events_queue_dropped_total, aioringbuf_decode_errors_total, "
               "aioringbuf_ring_fill_ratio, aioringbuf_queue_length, ... (label stream=\"exec\"), "
               "plus process_* and python_* metrics. Stops at Ctrl-C or SIGTERM with status 0; "
               "needs root, or CAP_BPF and CAP_PERFMON (status 77 if not), and prometheus_client "
               "(pip install 'aioringbuf[metrics]'). Beyond loopback it needs a token "
               f"(--token-file, or ${ENV_VAR}): clients send 'Authorization: Bearer TOKEN'.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    p.add_argument("--token-file", metavar="FILE",
                   help="require 'Authorization: Bearer TOKEN', TOKEN being the first line of "
                        f"FILE (chmod 600); default: ${ENV_VAR} if set. Needed beyond loopback")
    p.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE, metavar="BYTES",
                   help=f"kernel ring size, a power of two (default: {DEFAULT_RING_SIZE})")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="asyncio",
                   help="event loop to run on (default: asyncio)")
    p.set_defaults(run=run_exporter)


def run_exporter(args: argparse.Namespace) -> int:
    """Run the exporter until SIGINT/SIGTERM; returns the exit status."""
    backend, options = BACKENDS[args.backend]
    try:
        check_ring_size(args.ring_size, "--ring-size")
        args.token = read_token(args.token_file, ENV_VAR)
    except AioRingBufError as exc:
        _error("exporter", exc)
        return EXIT_ERROR if not isinstance(exc, TokenError) else EXIT_USAGE
    status = [EXIT_OK]
    anyio.run(_exporter_main, args, status, backend=backend, backend_options=options)
    return status[0]


async def _exporter_main(args: argparse.Namespace, status: list[int]) -> None:
    """Serve until a signal; errors the user can act on become a status and one line."""
    async with anyio.create_task_group() as tg:
        # The first signal cancels; the watcher then returns, so a second
        # Ctrl-C during shutdown is a KeyboardInterrupt, which main() exits on.
        await tg.start(_cancel_on_signals, tg.cancel_scope)
        try:
            await run(args)
        except NotPrivilegedError as exc:
            _error("exporter", exc)
            status[0] = EXIT_NOPERM
        except TokenError as exc:
            _error("exporter", exc)
            status[0] = EXIT_USAGE
        except (AioRingBufError, OSError) as exc:  # no BPF, port in use, no prometheus_client
            _error("exporter", exc)
            status[0] = EXIT_ERROR
        tg.cancel_scope.cancel()  # stop the signal watcher


async def run(args: argparse.Namespace) -> None:
    """Serve /metrics on ``args.host:args.port`` while draining exec events.

    Runs until cancelled. Binds before loading the BPF programs (a port in
    use fails fast) and says on stderr where it serves once the programs
    are attached, i.e. once no exec can be missed.
    """
    prom = require_prometheus("aioringbuf exporter's metrics")
    registry = prom.CollectorRegistry()
    prom.ProcessCollector(registry=registry)
    prom.PlatformCollector(registry=registry)
    prom.GCCollector(registry=registry)
    sock = listen(args.host, args.port)
    try:
        refuse_open_listener(sock.getsockname(), args.host, args.token,
                             f"give a token (--token-file FILE or ${ENV_VAR})")
    except TokenError:
        sock.close()
        raise
    listener = await anyio.abc.SocketListener.from_socket(sock)
    server = MetricsServer(registry, args.token)
    async with listener, exec_events(ring_size=args.ring_size) as events:
        registration = register(events, name="exec", registry=registry)
        try:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            host = f"[{args.host}]" if ":" in args.host else args.host
            print(f"aioringbuf exporter: serving http://{host}:{port}/metrics; Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, listener)
                async for _ in events:
                    pass  # the stream counts; stats() is all the exporter needs
        finally:
            registration.unregister()


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket (resolved and bound now, so it can be checked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


class MetricsServer:
    """The accept loop and the requests: bounded in connections, time and bytes."""

    def __init__(self, registry: Any, token: str | None) -> None:
        self.registry = registry
        self.token = token.encode() if token else None
        self.active = 0
        self.refused = 0  # connections answered 503: MAX_CONNECTIONS were open
        self.starved = 0  # accept() attempts that found no file descriptor left

    async def serve(self, listener: anyio.abc.SocketListener) -> None:
        pause = BACKOFF[0]
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    client = await listener.accept()
                except (OSError, anyio.BrokenResourceError) as exc:
                    # anyio's trio backend wraps the OSError in BrokenResourceError
                    cause = exc if isinstance(exc, OSError) else exc.__cause__
                    if not isinstance(cause, OSError) or cause.errno not in _OUT_OF_RESOURCES:
                        raise
                    if not self.starved:
                        _error("exporter", f"cannot accept connections ({cause.strerror}); "
                                           "pausing until some close")
                    self.starved += 1
                    await anyio.sleep(pause)  # the pending connection waits in the backlog
                    pause = min(pause * 2, BACKOFF[1])
                    continue
                pause = BACKOFF[0]
                if self.active >= MAX_CONNECTIONS:
                    self.refused += 1
                    tg.start_soon(self._refuse, client)
                else:
                    self.active += 1
                    tg.start_soon(self._handle, client)

    async def _refuse(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            with anyio.move_on_after(1), _quietly():
                await client.send(_response(503, "text/plain", b"busy: try again\n",
                                            extra=b"Retry-After: 1\r\n"))

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        """Answer one request, then close: GET /metrics, GET / (a link), else 4xx."""
        try:
            async with client:
                with anyio.move_on_after(REQUEST_TIMEOUT), _quietly():
                    head = await BufferedByteReceiveStream(client).receive_until(
                        b"\r\n\r\n", MAX_HEAD)
                    await client.send(self.respond(head))
        finally:
            self.active -= 1

    def authorized(self, head: bytes) -> bool:
        if self.token is None:
            return True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                scheme, _, credential = value.strip().partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credential.strip(), self.token)
        return False

    def respond(self, head: bytes) -> bytes:
        return _respond(self.registry, head, self.authorized(head))


class _quietly:
    """A client that left, dawdled or sent junk: nothing to answer, nothing to log."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, (
            anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.BrokenResourceError,
            anyio.EndOfStream, anyio.ClosedResourceError, OSError))


def _respond(registry: Any, head: bytes, authorized: bool = True) -> bytes:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response(400, "text/plain", b"bad request\n")
    if not authorized:
        return _response(401, "text/plain", b"send 'Authorization: Bearer TOKEN'\n",
                         extra=b'WWW-Authenticate: Bearer realm="aioringbuf"\r\n')
    method, path = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _response(405, "text/plain", b"only GET\n")
    if path == b"/metrics":
        body, ctype = generate_latest(registry), CONTENT_TYPE_LATEST
    elif path == b"/":
        body, ctype = b'<a href="/metrics">/metrics</a>\n', "text/html; charset=utf-8"
    else:
        return _response(404, "text/plain", b"not found: try /metrics\n", method == b"HEAD")
    return _response(200, ctype, body, method == b"HEAD")


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 503: "Service Unavailable"}


def _response(status: int, ctype: str, body: bytes, head_only: bool = False,
              extra: bytes = b"") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
    return head + extra + b"\r\n" + (b"" if head_only else body)
