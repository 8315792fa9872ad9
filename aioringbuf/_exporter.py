"""``aioringbuf exporter``: exec events as Prometheus metrics.

Drains :func:`~aioringbuf.exec_events` (counting, not printing) and serves
``GET /metrics`` in Prometheus' text format, from the same event loop, so
every scrape reads the stream's counters at one instant (see ``_metrics``).
The HTTP side is a few lines over an anyio TCP listener rather than an
ASGI server: it needs no dependency beyond prometheus_client, and runs on
asyncio, uvloop and trio alike.

It binds 127.0.0.1 unless told otherwise: exec counts say what the machine
is doing, so expose them (``--host 0.0.0.0``) only where you mean to.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ._cli import BACKENDS, EXIT_ERROR, EXIT_NOPERM, EXIT_OK, _cancel_on_signals, _error
from ._errors import AioRingBufError, NotPrivilegedError
from ._exec import DEFAULT_RING_SIZE, exec_events
from ._metrics import register, require_prometheus

DEFAULT_PORT = 9437
REQUEST_TIMEOUT = 10.0  # seconds for a client to send its request and take the answer
MAX_HEAD = 16 * 1024


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
               "(pip install 'aioringbuf[metrics]').",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    p.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE, metavar="BYTES",
                   help=f"kernel ring size, a power of two (default: {DEFAULT_RING_SIZE})")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="asyncio",
                   help="event loop to run on (default: asyncio)")
    p.set_defaults(run=run_exporter)


def run_exporter(args: argparse.Namespace) -> int:
    """Run the exporter until SIGINT/SIGTERM; returns the exit status."""
    backend, options = BACKENDS[args.backend]
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
    listener = await anyio.create_tcp_listener(local_host=args.host, local_port=args.port)
    async with listener, exec_events(ring_size=args.ring_size) as events:
        registration = register(events, name="exec", registry=registry)
        try:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            host = f"[{args.host}]" if ":" in args.host else args.host
            print(f"aioringbuf exporter: serving http://{host}:{port}/metrics; Ctrl-C to stop",
                  file=sys.stderr, flush=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, partial(_handle, registry))
                async for _ in events:
                    pass  # the stream counts; stats() is all the exporter needs
        finally:
            registration.unregister()


async def _handle(registry: Any, client: anyio.abc.SocketStream) -> None:
    """Answer one request, then close: GET /metrics, GET / (a link), else 404/405."""
    async with client:
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                head = await BufferedByteReceiveStream(client).receive_until(b"\r\n\r\n", MAX_HEAD)
                await client.send(_respond(registry, head))
        except (TimeoutError, anyio.IncompleteRead, anyio.DelimiterNotFound,
                anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            pass  # a client that left, dawdled or sent junk: nothing to answer


def _respond(registry: Any, head: bytes) -> bytes:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response(400, "text/plain", b"bad request\n")
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


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _response(status: int, ctype: str, body: bytes, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + (b"" if head_only else body)
