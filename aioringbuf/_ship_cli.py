"""``aioringbuf ship`` and ``aioringbuf exec --from nats://...``: the fleet commands."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import socket
import sys
from typing import Any

import anyio
import anyio.abc

from ._cli_common import (
    EXIT_ERROR,
    EXIT_NOPERM,
    EXIT_OK,
    STDOUT_GRACE,
    _cancel_on_signals,
    _cancel_when_set,
    _error,
    _positive_float,
    _setter,
    _silence_stdout,
    filter_from_args,
    format_json,
    table_from_args,
)
from ._errors import AioRingBufError, NotPrivilegedError
from ._escape import printable, terminal
from ._exec import DEFAULT_RING_SIZE
from ._exec_table import Table
from ._output import LineWriter
from ._pin import DEFAULT_PIN_ROOT, remove_pinned
from ._ship import DEFAULT_STREAM, RETENTIONS, ShipOptions, Shipper

SHIP_EPILOG = f"""\
Each exec becomes one JSON message {{"host", "key", "event"}} on subject
aioringbuf.exec.<host> of JetStream stream {DEFAULT_STREAM} (made if missing), with
Nats-Msg-Id = key (<boot id>:<ring map id>:<ring position>): JetStream drops the
copies an agent restarted after a crash publishes again. The exec programs and
their ring are pinned under --pin-dir, so they keep recording while no agent
runs; a new agent resumes at the first event JetStream has not acknowledged.
`aioringbuf ship --remove` detaches and deletes them.

Credentials: --creds FILE, or $NATS_CREDS; $NATS_USER and $NATS_PASSWORD; $NATS_TOKEN.
Stops at Ctrl-C or SIGTERM with status 0 and a summary; the pinned programs stay.
"""


def add_ship_command(sub: Any) -> None:
    p = sub.add_parser(
        "ship", help="ship every exec() to NATS JetStream, exactly once",
        description="Ship this machine's exec events to a NATS JetStream stream.",
        epilog=SHIP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nats", metavar="URL[,URL...]",
                   help="NATS server URLs (several for a cluster)")
    p.add_argument("--creds", metavar="FILE", default=os.environ.get("NATS_CREDS"),
                   help="NATS credentials file (default: $NATS_CREDS)")
    p.add_argument("--stream", default=DEFAULT_STREAM, help=f"stream name ({DEFAULT_STREAM})")
    p.add_argument("--replicas", type=int, default=1, help="stream replicas, if made (1)")
    p.add_argument("--retention", choices=RETENTIONS, default="limits",
                   help="stream retention policy, if made (limits)")
    p.add_argument("--max-age", type=_positive_float, metavar="SECONDS",
                   help="stream: drop events older than this (default: keep)")
    p.add_argument("--max-bytes", type=int, metavar="BYTES", help="stream: size limit")
    p.add_argument("--duplicate-window", type=_positive_float, default=120.0,
                   metavar="SECONDS", help="stream: how long JetStream remembers message "
                   "ids; must cover an agent's restart (120)")
    p.add_argument("--window", type=int, default=1024,
                   help="publishes in flight at most (1024)")
    p.add_argument("--host", default=socket.gethostname(), dest="host_name",
                   help="host name in the subject and the events (this machine's)")
    p.add_argument("--pin-dir", default=os.path.join(DEFAULT_PIN_ROOT, "exec"),
                   help=f"bpffs directory of the pinned programs ({DEFAULT_PIN_ROOT}/exec)")
    p.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE, metavar="BYTES",
                   help="kernel ring size when the programs are first pinned")
    p.add_argument("--remove", action="store_true",
                   help="detach and delete the pinned programs and ring, then exit")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                   help="stop after SECONDS")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    p.add_argument("--backend", choices=("asyncio", "uvloop"), default="asyncio",
                   help="event loop (nats-py needs asyncio; default: asyncio)")
    p.set_defaults(run=run_ship)


def _servers(text: str) -> list[str]:
    return [u.strip() for u in text.split(",") if u.strip()]


def run_ship(args: argparse.Namespace) -> int:
    if args.remove:
        return _remove(args.pin_dir)
    if not args.nats:
        _error("ship", "give --nats URL (or --remove)")
        return EXIT_ERROR
    try:
        options = ShipOptions(
            servers=_servers(args.nats), stream=args.stream, host=args.host_name,
            replicas=args.replicas, retention=args.retention, max_age=args.max_age,
            max_bytes=args.max_bytes, duplicate_window=args.duplicate_window,
            window=args.window, pin_dir=args.pin_dir, ring_size=args.ring_size,
            creds=args.creds, user=os.environ.get("NATS_USER"),
            password=os.environ.get("NATS_PASSWORD"), token=os.environ.get("NATS_TOKEN"))
    except ValueError as exc:
        _error("ship", exc)
        return EXIT_ERROR
    status = [EXIT_OK]
    anyio.run(_ship_main, args, options, status, backend="asyncio",
              backend_options={"use_uvloop": args.backend == "uvloop"})
    return status[0]


def _remove(path: str) -> int:
    try:
        removed = remove_pinned(path)
    except OSError as exc:
        _error("ship", f"removing {path}: {exc}")
        return EXIT_NOPERM if isinstance(exc, PermissionError) else EXIT_ERROR
    if removed:
        print(f"aioringbuf ship: removed {len(removed)} pinned objects from {path}: the "
              "programs are detached (a running agent keeps only its ring until it exits)",
              file=sys.stderr)
    else:
        print(f"aioringbuf ship: nothing pinned at {path}", file=sys.stderr)
    return EXIT_OK


async def _ship_main(args: argparse.Namespace, options: ShipOptions,
                     status: list[int]) -> None:
    shipper: Shipper | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(_cancel_on_signals, tg.cancel_scope)
        try:
            shipper = Shipper(options)
            if args.metrics_port is not None:
                await tg.start(_serve_metrics, shipper, args.metrics_port)
            with anyio.move_on_after(args.duration or float("inf")):
                await shipper.run()  # here, not in a task: its errors are caught below
        except NotPrivilegedError as exc:
            _error("ship", exc)
            status[0] = EXIT_NOPERM
        except (AioRingBufError, OSError) as exc:
            _error("ship", exc)
            status[0] = EXIT_ERROR
        tg.cancel_scope.cancel()
    if shipper is not None and status[0] == EXIT_OK:
        st = shipper.stats()
        kernel = "unknown" if st.kernel_drops is None else st.kernel_drops
        print(f"aioringbuf ship: {st.acknowledged} events acknowledged by JetStream "
              f"({st.duplicates} duplicates), {st.published} published, {st.in_flight} in "
              f"flight left in the ring, {kernel} kernel drops (ring's life), "
              f"{st.reconnects} reconnects", file=sys.stderr, flush=True)


async def _serve_metrics(shipper: Shipper, port: int, *,
                         task_status: anyio.abc.TaskStatus[None]) -> None:
    from ._exporter import MetricsServer, listen
    from ._metrics import register, require_prometheus

    prom = require_prometheus("aioringbuf ship --metrics-port")
    registry = prom.CollectorRegistry()
    registration = register(shipper, name="ship", registry=registry)
    try:
        # the exporter's server: bounded connections, EMFILE back-off
        listener = await anyio.abc.SocketListener.from_socket(listen("127.0.0.1", port))
        async with listener:
            task_status.started()
            await MetricsServer(registry, None).serve(listener)
    finally:
        registration.unregister()


# -- aioringbuf exec --from nats://... -------------------------------------------

def run_fleet_exec(args: argparse.Namespace) -> int:
    """`aioringbuf exec --from URL`: the table (or --json) of every shipping host."""
    status = [EXIT_OK]
    anyio.run(_fleet_main, args, status, backend="asyncio")
    return status[0]


async def _fleet_main(args: argparse.Namespace, status: list[int]) -> None:
    from ._fleet import fleet_events

    accept = filter_from_args(args)
    table = table_from_args(args, time=True)  # the hosts' clocks: TIME always
    sys.stdout.flush()
    gone = anyio.Event()
    # Written by a thread: a stalled reader never blocks the signal handling.
    out = LineWriter(sys.stdout.fileno(), on_broken=_setter(gone))
    shown = 0
    async with anyio.create_task_group() as tg:
        await tg.start(_cancel_on_signals, tg.cancel_scope)
        tg.start_soon(_cancel_when_set, gone, tg.cancel_scope)
        try:
            if not args.json:
                out.write(f"{'HOST':<16} " + table.header())
            with anyio.move_on_after(args.duration or float("inf")):
                async for fe in fleet_events(args.source, follow=not args.to_end):
                    if not accept(fe.event):
                        continue
                    # the host name is the shipper's to choose: escaped like argv
                    line = fleet_json(fe) if args.json else fleet_row(fe, table)
                    out.write(line)
                    shown += 1
        except (AioRingBufError, OSError, asyncio.TimeoutError) as exc:
            _error("exec", f"reading {args.source}: {exc}")
            status[0] = EXIT_ERROR
        except Exception as exc:  # nats-py's own errors (no servers, no such stream)
            _error("exec", f"reading {args.source}: {type(exc).__name__}: {exc}")
            status[0] = EXIT_ERROR
        tg.cancel_scope.cancel()
    out.close(STDOUT_GRACE)
    if out.broken:
        _silence_stdout()
    unwritten = f", {out.dropped} lines not written (stdout not read)" if out.dropped else ""
    if status[0] == EXIT_OK:
        print(f"aioringbuf exec: {shown} events shown from {args.source}{unwritten}",
              file=sys.stderr)


def fleet_row(fe: Any, table: Table) -> str:
    """`exec`'s row with a HOST column, and the time by the exec's host's clock."""
    return f"{terminal(fe.host)[:16]:<16} {table.row(fe.event, wall_ns=fe.time_ns)}"


def fleet_json(fe: Any) -> str:
    """`exec --json`'s object plus "host", with "time" from the exec's host."""
    import msgspec

    doc = msgspec.json.decode(format_json(fe.event))
    wall = fe.time_ns
    when = datetime.datetime.fromtimestamp(wall // 1_000_000_000, datetime.timezone.utc)
    doc["time"] = f"{when:%Y-%m-%dT%H:%M:%S}.{wall % 1_000_000_000:09d}Z"
    return msgspec.json.encode({"host": printable(fe.host), **doc}).decode()
