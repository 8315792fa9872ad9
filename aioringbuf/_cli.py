"""The ``aioringbuf`` command: ``aioringbuf exec``, ``exporter`` and ``ship``.

Each subcommand registers itself in :func:`build_parser` with an ``add_*``
function that sets ``run``: a function from the parsed arguments to an exit
status. Errors the user can act on (no privileges, an unsupported kernel)
end as one line on stderr and a non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pwd
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
import anyio.abc
import msgspec

from ._errors import AioRingBufError, NotPrivilegedError
from ._exec import (
    DEFAULT_RING_SIZE,
    ExecEvent,
    ExecEvents,
    ExecFilter,
    exec_events,
    printable,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOPERM = 77  # sysexits.h EX_NOPERM

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aioringbuf`` and ``python -m aioringbuf``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except BaseException as exc:
        # Ctrl-C before the signal handlers were installed, or a second one
        # inside a task group, which wraps it in an exception group.
        if _only_interrupts(exc):
            return EXIT_OK
        raise


def _only_interrupts(exc: BaseException) -> bool:
    """True for a KeyboardInterrupt, or a (nested) exception group of nothing else.

    The signal receiver gives SIGINT back to Python's default handler as it
    closes; a second Ctrl-C in that moment raises KeyboardInterrupt inside a
    task, and the task group wraps it.
    """
    if isinstance(exc, KeyboardInterrupt):
        return True
    inner = getattr(exc, "exceptions", None)  # BaseExceptionGroup (3.11+ or backport)
    return isinstance(inner, tuple) and bool(inner) and all(map(_only_interrupts, inner))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioringbuf",
        description="Stream BPF ring buffer events into async Python.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_exec_command(sub)
    from ._exporter import add_exporter_command  # here: _exporter imports this module

    add_exporter_command(sub)
    from ._ship_cli import add_ship_command  # the fleet: `ship`, and `exec --from`

    add_ship_command(sub)
    return parser


def _error(command: str, message: object) -> None:
    print(f"aioringbuf {command}: {message}", file=sys.stderr, flush=True)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {text}")
    return value


def _uid(text: str) -> int:
    """A numeric uid or a user name."""
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text}") from None


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from None


# -- aioringbuf exec ----------------------------------------------------------

EXEC_EPILOG = """\
Columns: TIME (local, when exec returned), PCOMM (the new program's name, or
the caller's if the exec failed), PID, PPID, RET (0 or -errno), ARGS (argv,
shell-quoted; " ..." marks arguments left out: more than 128 or 4 KiB).

--json prints one object per line with every field of aioringbuf.ExecEvent
plus "time" (ISO 8601, UTC). Bytes that are not UTF-8 cannot appear in JSON:
in JSON strings (and in the table) they are written as backslash escapes,
e.g. the byte 0xff as \\xff.

Stops at Ctrl-C, SIGTERM or --duration with exit status 0 and a summary on
stderr: events seen and shown, and records lost in the kernel (ring full, or
too many execs in flight) and in the queue. Needs root, or CAP_BPF and
CAP_PERFMON with read access to /sys/kernel/tracing (exit status 77 if not).
"""


def add_exec_command(sub: Any) -> None:
    p = sub.add_parser(
        "exec",
        help="trace every exec() on the machine, like execsnoop",
        description="Trace every execve()/execveat() on this machine, with its result.",
        epilog=EXEC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line instead of a table "
                        "(non-UTF-8 bytes as backslash escapes)")
    p.add_argument("--pid", type=int, action="append", metavar="PID",
                   help="only execs by process PID (repeatable)")
    p.add_argument("--ppid", type=int, action="append", metavar="PPID",
                   help="only execs by children of PPID (repeatable)")
    p.add_argument("--uid", type=_uid, action="append", metavar="UID",
                   help="only execs by this real user id or name (repeatable)")
    p.add_argument("--name", type=_regex, metavar="REGEX",
                   help="only execs where REGEX is found (re.search) in the command name "
                        "(PCOMM), the last component of the file name, or argv[0]")
    p.add_argument("--failed", action="store_true", help="only failed execs (RET < 0)")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                   help="stop after SECONDS")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="asyncio",
                   help="event loop to run on (default: asyncio)")
    p.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE, metavar="BYTES",
                   help=f"kernel ring size, a power of two (default: {DEFAULT_RING_SIZE})")
    p.add_argument("--from", dest="source", metavar="nats://URL[,URL...]",
                   help="show the execs that `aioringbuf ship` agents sent to this NATS "
                        "JetStream (all hosts, with a HOST column) instead of this machine's")
    p.add_argument("--no-follow", dest="to_end", action="store_true",
                   help="with --from: stop at the end of the stream")
    p.set_defaults(run=run_exec)


def filter_from_args(args: argparse.Namespace) -> ExecFilter:
    """The --pid/--ppid/--uid/--name/--failed options as an ExecFilter."""
    return ExecFilter(
        pids=frozenset(args.pid or ()),
        ppids=frozenset(args.ppid or ()),
        uids=frozenset(args.uid or ()),
        name=args.name,
        failed=args.failed,
    )


TABLE_HEADER = f"{'TIME':<8} {'PCOMM':<16} {'PID':>7} {'PPID':>7} {'RET':>4} ARGS"


def format_row(ev: ExecEvent) -> str:
    """One table row, execsnoop style."""
    clock = time.strftime("%H:%M:%S", time.localtime(ev.wall_time_ns // 1_000_000_000))
    args = " ".join(shlex.quote(printable(a)) for a in ev.argv) or shlex.quote(
        printable(ev.filename))
    if ev.args_truncated:
        args += " ..."
    return f"{clock:<8} {printable(ev.comm):<16} {ev.pid:>7} {ev.ppid:>7} {ev.ret:>4} {args}"


_json = msgspec.json.Encoder()


def format_json(ev: ExecEvent) -> str:
    """One JSON object: every field, strings made valid UTF-8, plus "time"."""
    wall = ev.wall_time_ns
    when = datetime.datetime.fromtimestamp(wall // 1_000_000_000, datetime.timezone.utc)
    record = msgspec.structs.asdict(ev)
    record["comm"] = printable(ev.comm)
    record["filename"] = printable(ev.filename)
    record["argv"] = [printable(a) for a in ev.argv]
    doc = {"time": f"{when:%Y-%m-%dT%H:%M:%S}.{wall % 1_000_000_000:09d}Z", **record}
    return _json.encode(doc).decode()


@dataclass
class ExecRun:
    """What one `aioringbuf exec` run saw, for the summary line."""

    shown: int = 0
    stats: Any = None
    enter_drops: int | None = None
    exit_status: int = EXIT_OK

    def summary(self) -> str:
        st = self.stats
        if st is None:
            return "aioringbuf exec: 0 events"
        kernel = "unknown" if st.kernel_drops is None else st.kernel_drops
        at_entry = f" ({self.enter_drops} at entry)" if self.enter_drops else ""
        return (f"aioringbuf exec: {st.delivered} events ({self.shown} shown), "
                f"{kernel} kernel drops{at_entry}, {st.queue_drops} queue drops")


def run_exec(args: argparse.Namespace) -> int:
    """Run `aioringbuf exec` on the chosen backend; returns the exit status."""
    if args.source:
        from ._ship_cli import run_fleet_exec

        return run_fleet_exec(args)
    backend, options = BACKENDS[args.backend]
    run = ExecRun()
    anyio.run(_exec_main, args, run, backend=backend, backend_options=options)
    if run.exit_status == EXIT_OK:
        print(run.summary(), file=sys.stderr, flush=True)
    return run.exit_status


async def _exec_main(args: argparse.Namespace, run: ExecRun) -> None:
    """Trace until a signal, --duration, or an error; record results in ``run``."""
    async with anyio.create_task_group() as tg:
        await tg.start(_cancel_on_signals, tg.cancel_scope)
        with anyio.move_on_after(args.duration if args.duration else float("inf")):
            await _trace(args, run)
        tg.cancel_scope.cancel()  # stop the signal watcher


async def _cancel_on_signals(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Turn SIGINT/SIGTERM into a cancellation: the trace ends, status 0."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return


async def _trace(args: argparse.Namespace, run: ExecRun) -> None:
    accept = filter_from_args(args)
    fmt: Callable[[ExecEvent], str] = format_json if args.json else format_row
    out = sys.stdout
    try:
        events = exec_events(ring_size=args.ring_size)
        async with events:
            try:
                _announce(args, out)
                await _print_events(events, accept, fmt, out, run)
            except BrokenPipeError:
                _silence_stdout()  # the reader left (`| head`): that ends the trace
            finally:
                _finish(events, run)
    except NotPrivilegedError as exc:
        _error("exec", exc)
        run.exit_status = EXIT_NOPERM
    except AioRingBufError as exc:  # kernel too old, object missing, bad size, ...
        _error("exec", exc)
        run.exit_status = EXIT_ERROR


def _announce(args: argparse.Namespace, out: TextIO) -> None:
    """Tell readers the probes are attached: from now on no exec is missed."""
    if not args.json:
        out.write(TABLE_HEADER + "\n")
        out.flush()
    print("aioringbuf exec: tracing exec() calls; Ctrl-C to stop", file=sys.stderr, flush=True)


async def _print_events(
    events: ExecEvents,
    accept: Callable[[ExecEvent], bool],
    fmt: Callable[[ExecEvent], str],
    out: TextIO,
    run: ExecRun,
) -> None:
    async for ev in events:
        if accept(ev):
            out.write(fmt(ev) + "\n")
            out.flush()  # line by line: a reader (or `| grep`) sees each exec at once
            run.shown += 1


def _finish(events: ExecEvents, run: ExecRun) -> None:
    run.enter_drops = events.enter_drops()
    run.stats = events.stats()


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the exit-time flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
