"""The ``aioringbuf`` command: ``aioringbuf exec``, ``exporter`` and ``ship``.

Each subcommand registers itself in :func:`build_parser` with an ``add_*``
function that sets ``run``: a function from the parsed arguments to an exit
status. Errors the user can act on (no privileges, an unsupported kernel)
end as one line on stderr and a non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import pwd
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import msgspec

from ._cgroup import cgroup_of
from ._cli_common import (
    BACKENDS,
    EXIT_ERROR,
    EXIT_NOPERM,
    EXIT_OK,
    STDOUT_GRACE,
    TABLE_HEADER,
    _error,
    _json,
    _positive_float,
    _setter,
    _silence_stdout,
    _valid_utf8,
    filter_from_args,
    format_json,
    format_row,
    json_schema,
)
from ._errors import AioRingBufError, MissingDependencyError, NotPrivilegedError
from ._escape import terminal
from ._exec import (
    DEFAULT_RING_SIZE,
    ExecEvent,
    ExecEvents,
    ExecFilter,
    ExitEvent,
    exec_events,
)
from ._exporter import add_exporter_command
from ._output import LineWriter
from ._pattern import Pattern, PatternError
from ._ship_cli import add_ship_command


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
    add_exporter_command(sub)
    add_ship_command(sub)  # the fleet: `ship`, and `exec --from`
    return parser


def _uid(text: str) -> int:
    """A numeric uid or a user name."""
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text}") from None


def _cgroup(text: str) -> str:
    """A cgroup v2 directory, checked now so that a typo is a usage error."""
    try:
        cgroup_of(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _regex(text: str) -> Pattern:
    """An RE2 pattern: the text it is matched against (argv) is anyone's."""
    try:
        return Pattern(text)
    except (PatternError, MissingDependencyError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- aioringbuf exec ----------------------------------------------------------

EXEC_EPILOG = """\
Columns: TIME (local, when exec returned), PCOMM (the new program's name, or
the caller's if the exec failed), PID, PPID, RET (0 or -errno), ARGS (argv,
shell-quoted; " ..." marks arguments left out: more than 128 or 4 KiB).
Control characters, DEL, C1 and format characters, and bytes that are not
UTF-8 are shown as escapes (\\x1b, \\n, \\u0085, \\xff): nothing a traced
process chooses reaches the terminal as a control.

--json prints one object per line: msgspec.json.encode(event), every field
of aioringbuf.ExecEvent (times in nanoseconds: ts_ns on CLOCK_MONOTONIC,
realtime_ns since the epoch), which msgspec.json.decode(line,
type=ExecEvent) turns back into the same event. Each byte that is not UTF-8
is the character U+10FF00 + byte (the byte 0xff is U+10FFFF), so a real
backslash stays a backslash; aioringbuf.exec.kernel_bytes(s) gives the bytes
back. --json-schema prints the JSON Schema of these objects. With --exits,
exits are {"event": "exit", ...} objects.

--name takes an RE2 pattern (google-re2, pip install 'aioringbuf[re2]'):
matching takes time linear in the text whatever the pattern, so no argv
can stall the trace; no backreferences or lookaround.

Output is written by a thread of its own: if the reader of stdout stops
reading, lines beyond 4 MiB are dropped and counted in the summary, and
Ctrl-C or SIGTERM still end the trace at once.

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
                   help="one JSON object per line instead of a table (lossless: see below)")
    p.add_argument("--json-schema", action="store_true",
                   help="print the JSON Schema of --json's objects and exit")
    p.add_argument("--pid", type=int, action="append", metavar="PID",
                   help="only execs by process PID (repeatable)")
    p.add_argument("--ppid", type=int, action="append", metavar="PPID",
                   help="only execs by children of PPID (repeatable)")
    p.add_argument("--uid", type=_uid, action="append", metavar="UID",
                   help="only execs by this real user id or name (repeatable)")
    p.add_argument("--name", type=_regex, metavar="REGEX",
                   help="only execs where REGEX (RE2 syntax) is found in the command name "
                        "(PCOMM), the last component of the file name, or argv[0]")
    p.add_argument("--failed", action="store_true", help="only failed execs (RET < 0)")
    p.add_argument("--cgroup", type=_cgroup, metavar="PATH",
                   help="only execs in this cgroup v2 and below it (a directory, or the path "
                        "as /proc/PID/cgroup shows it)")
    p.add_argument("--exits", action="store_true",
                   help="also show each process's exit: code or signal, and time since its exec")
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


def format_exit_row(ev: ExitEvent) -> str:
    """An exit as a table row: RET is the exit code, ARGS how and when."""
    clock = time.strftime("%H:%M:%S", time.localtime(ev.wall_time_ns // 1_000_000_000))
    if ev.signal:
        try:
            how = signal.Signals(ev.signal).name
        except ValueError:
            how = f"signal {ev.signal}"
    else:
        how = f"exit {ev.exit_code}"
    since = "exec" if ev.since_exec else "start"
    return (f"{clock:<8} {terminal(ev.comm):<16} {ev.pid:>7} {ev.ppid:>7} {ev.exit_code:>4} "
            f"[{how}, {ev.duration_ns / 1e9:.3f} s after its {since}]")


def format_exit_json(ev: ExitEvent) -> str:
    """An exit as one JSON object, with "event": "exit" and "time"."""
    wall = ev.wall_time_ns
    when = datetime.datetime.fromtimestamp(wall // 1_000_000_000, datetime.timezone.utc)
    record = _valid_utf8(msgspec.structs.asdict(ev))
    record["since_exec"] = ev.since_exec
    doc = {"event": "exit", "time": f"{when:%Y-%m-%dT%H:%M:%S}.{wall % 1_000_000_000:09d}Z",
           **record}
    return _json.encode(doc).decode()


def exit_accepted(f: ExecFilter, ev: ExitEvent) -> bool:
    """The --pid/--ppid/--uid/--name options applied to an exit (comm for --name)."""
    return ((not f.pids or ev.pid in f.pids) and (not f.ppids or ev.ppid in f.ppids)
            and (not f.uids or ev.uid in f.uids)
            and (f.name is None or bool(f.name.search(ev.comm))))


@dataclass
class ExecRun:
    """What one `aioringbuf exec` run saw, for the summary line."""

    shown: int = 0
    stats: Any = None
    enter_drops: int | None = None
    unread: int | None = None
    exit_status: int = EXIT_OK
    unwritten: int = 0  # lines stdout did not take (reader stalled or gone)

    def summary(self) -> str:
        """Every bucket: events + kernel drops + queue drops + decode errors +
        unread == every record the kernel tried to write."""
        st = self.stats
        if st is None:
            return "aioringbuf exec: 0 events"
        kernel = "unknown" if st.kernel_drops is None else st.kernel_drops
        unread = "unknown" if self.unread is None else self.unread
        at_entry = f" ({self.enter_drops} at entry)" if self.enter_drops else ""
        unwritten = (f", {self.unwritten} lines not written (stdout not read)"
                     if self.unwritten else "")
        return (f"aioringbuf exec: {st.delivered} events ({self.shown} shown), "
                f"{kernel} kernel drops{at_entry}, {st.queue_drops} queue drops, "
                f"{st.decode_errors} decode errors, {unread} unread at exit{unwritten}")


def run_exec(args: argparse.Namespace) -> int:
    """Run `aioringbuf exec` on the chosen backend; returns the exit status."""
    if args.json_schema:
        print(json_schema())
        return EXIT_OK
    if args.source:
        from ._ship_cli import run_fleet_exec

        return run_fleet_exec(args)
    backend, options = BACKENDS[args.backend]
    run = ExecRun()
    anyio.run(_exec_main, args, run, backend=backend, backend_options=options)
    if run.exit_status == EXIT_OK:
        print(run.summary(), file=sys.stderr, flush=True)
    return run.exit_status


DRAIN_TIMEOUT = 1.0  # seconds to print what the ring still holds at the end


async def _exec_main(args: argparse.Namespace, run: ExecRun) -> None:
    """Trace until a signal, --duration, or an error; record results in ``run``."""
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(_stop_on_signals, stopping, tg.cancel_scope)
        await _trace(args, run, stopping)
        tg.cancel_scope.cancel()  # stop the signal watcher


async def _stop_on_signals(
    stopping: anyio.Event, scope: anyio.CancelScope, *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """SIGINT/SIGTERM: stop producing and print what is left (up to
    DRAIN_TIMEOUT); a second one ends the trace at once. Status 0 either way."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            if stopping.is_set():
                scope.cancel()
                return
            stopping.set()


async def _trace(args: argparse.Namespace, run: ExecRun, stopping: anyio.Event) -> None:
    accept = filter_from_args(args)
    fmt: Callable[[ExecEvent], str] = format_json if args.json else format_row
    try:
        # In the kernel where it can be (what they leave out never enters the
        # ring, nor the summary's counts); ExecFilter checks them again.
        uids = set(args.uid or ())
        events = exec_events(ring_size=args.ring_size, failed=args.failed, cgroup=args.cgroup,
                             uid=uids.pop() if len(uids) == 1 else None, exits=args.exits)
        async with events:
            sys.stdout.flush()
            gone = anyio.Event()
            out = LineWriter(sys.stdout.fileno(), on_broken=_setter(gone))
            try:
                _announce(args, out)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_set_when_set, gone, stopping)
                    tg.start_soon(_print_events, events, accept, fmt, out, run)
                    with anyio.move_on_after(args.duration if args.duration else float("inf")):
                        await stopping.wait()
                    # The end: no new records, then what the ring holds, briefly
                    # (not if the reader left); the rest is counted as unread.
                    events.stop_producing()
                    with anyio.move_on_after(0 if gone.is_set() else DRAIN_TIMEOUT):
                        while not events.caught_up():
                            await anyio.sleep(0.005)
                    tg.cancel_scope.cancel()
            finally:
                out.close(STDOUT_GRACE)
                run.unwritten = out.dropped
                if out.broken:
                    _silence_stdout()  # the reader left (`| head`): that ends the trace
                _finish(events, run)
    except NotPrivilegedError as exc:
        _error("exec", exc)
        run.exit_status = EXIT_NOPERM
    except AioRingBufError as exc:  # kernel too old, object missing, bad size, ...
        _error("exec", exc)
        run.exit_status = EXIT_ERROR


async def _set_when_set(event: anyio.Event, then: anyio.Event) -> None:
    await event.wait()
    then.set()


def _announce(args: argparse.Namespace, out: LineWriter) -> None:
    """Tell readers the probes are attached: from now on no exec is missed."""
    if not args.json:
        out.write(TABLE_HEADER)
    print("aioringbuf exec: tracing exec() calls; Ctrl-C to stop", file=sys.stderr, flush=True)


async def _print_events(
    events: ExecEvents,
    accept: Callable[[ExecEvent], bool],
    fmt: Callable[[ExecEvent], str],
    out: LineWriter,
    run: ExecRun,
) -> None:
    exit_fmt = format_exit_json if fmt is format_json else format_exit_row
    async for ev in events:
        if isinstance(ev, ExitEvent):
            if isinstance(accept, ExecFilter) and exit_accepted(accept, ev):
                out.write(exit_fmt(ev))
                run.shown += 1
            continue
        if accept(ev):
            out.write(fmt(ev))  # never blocks: the writer thread takes it line by line
            run.shown += 1


def _finish(events: ExecEvents, run: ExecRun) -> None:
    events.close()  # detached already, unless a second signal came first
    run.enter_drops = events.enter_drops()
    run.stats = events.stats()
    run.unread = events.unread()
