"""The ``aioringbuf`` command: ``aioringbuf exec``, ``exporter`` and ``ship``.

Each subcommand registers itself in :func:`build_parser` with an ``add_*``
function that sets ``run``: a function from the parsed arguments to an exit
status. Errors the user can act on (no privileges, an unsupported kernel)
end as one line on stderr and a non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import msgspec

from ._cli_common import (
    EXIT_ERROR,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_SIGNAL,
    EXIT_USAGE,
    STDOUT_GRACE,
    _cancel_when_set,
    _error,
    _json,
    _setter,
    _silence_stdout,
    backend_or_error,
    filter_from_args,
    format_json,
    json_schema,
    table_from_args,
)
from ._errors import AioRingBufError, NotPrivilegedError
from ._exec import ExecEvent, ExecEvents, ExecFilter, ExitEvent, exec_events
from ._exec_options import VERSION, add_exec_parser
from ._exec_table import Table
from ._exporter import add_exporter_command
from ._output import LineWriter
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
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_exec_command(sub)
    add_exporter_command(sub)
    add_ship_command(sub)  # the fleet: `ship`, and `exec --from`
    return parser


# -- aioringbuf exec ----------------------------------------------------------


def add_exec_command(sub: Any) -> None:
    add_exec_parser(sub).set_defaults(run=run_exec)


def format_exit_json(ev: ExitEvent) -> str:
    """An exit as one JSON object, with "event": "exit" and "time"."""
    wall = ev.wall_time_ns
    when = datetime.datetime.fromtimestamp(wall // 1_000_000_000, datetime.timezone.utc)
    record = msgspec.structs.asdict(ev)  # lossless, as ExecEvent's line: comm is valid Unicode
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
    filtered: int | None = None  # left out in the kernel by the success/failure choice
    hidden: str = "failed execs not traced (-x shows them)"  # what that choice left out
    exit_status: int = EXIT_OK
    unwritten: int = 0  # lines stdout did not take (reader stalled or gone)
    started: bool = False  # attached and announced: a signal now ends a trace
    signal: int = 0  # the first SIGINT/SIGTERM

    def summary(self) -> str:
        """Every bucket: events + kernel drops + queue drops + decode errors +
        unread == every record the kernel tried to write. Attempts the
        success/failure choice left out were never written: not a bucket."""
        st = self.stats
        if st is None:
            return "aioringbuf exec: 0 events"
        kernel = "unknown" if st.kernel_drops is None else st.kernel_drops
        unread = "unknown" if self.unread is None else self.unread
        at_entry = f" ({self.enter_drops} at entry)" if self.enter_drops else ""
        unwritten = (f", {self.unwritten} lines not written (stdout not read)"
                     if self.unwritten else "")
        hidden = f"; {self.filtered} {self.hidden}" if self.filtered else ""
        return (f"aioringbuf exec: {st.delivered} events ({self.shown} shown), "
                f"{kernel} kernel drops{at_entry}, {st.queue_drops} queue drops, "
                f"{st.decode_errors} decode errors, {unread} unread at exit{unwritten}"
                f"{hidden}")


def run_exec(args: argparse.Namespace) -> int:
    """Run `aioringbuf exec` on the chosen backend; returns the exit status."""
    if args.json_schema:
        print(json_schema(exits=args.exits))
        return EXIT_OK
    if args.source:
        if args.timestamp:
            _error("exec", "-t/--timestamp does not apply to --from (each host has its clock)")
            return EXIT_USAGE
        from ._ship_cli import run_fleet_exec

        return run_fleet_exec(args)
    picked = backend_or_error("exec", args.backend)
    if picked is None:
        return EXIT_ERROR
    backend, options = picked
    run = ExecRun()
    try:
        anyio.run(_exec_main, args, run, backend=backend, backend_options=options)
    except BaseException as exc:
        # Ctrl-C before the signal handlers were installed (or, after the
        # start, a second one during shutdown: main() exits 0 on that).
        if run.started or not _only_interrupts(exc):
            raise
        run.signal = run.signal or signal.SIGINT
    if run.exit_status != EXIT_OK:
        return run.exit_status
    if not run.started:
        name = signal.Signals(run.signal or signal.SIGINT).name
        _error("exec", f"interrupted ({name}) while starting; nothing was traced")
        return EXIT_SIGNAL + (run.signal or signal.SIGINT)
    print(run.summary(), file=sys.stderr, flush=True)
    return run.exit_status


DRAIN_TIMEOUT = 1.0  # seconds to print what the ring still holds at the end
START_SIGNAL_TURNS = 5  # event loop turns for a pending signal to reach _stop_on_signals
WARN_EVERY = 1.0  # seconds between two drop warnings, at most one each


async def _exec_main(args: argparse.Namespace, run: ExecRun) -> None:
    """Trace until a signal, --duration, or an error; record results in ``run``."""
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(_stop_on_signals, stopping, tg.cancel_scope, run)
        await _trace(args, run, stopping)
        tg.cancel_scope.cancel()  # stop the signal watcher


async def _stop_on_signals(
    stopping: anyio.Event, scope: anyio.CancelScope, run: ExecRun, *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """SIGINT/SIGTERM: stop producing and print what is left (up to
    DRAIN_TIMEOUT); a second one ends the trace at once. Status 0 either way.
    During start-up the first one cancels loading (see :func:`_start`)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if stopping.is_set():
                scope.cancel()
                return
            run.signal = int(signum)
            stopping.set()


async def _start(events: ExecEvents, stopping: anyio.Event) -> bool:
    """Load and attach unless a signal comes first: True once attached.

    Loading runs in a worker thread; a signal cancels it as soon as that
    thread returns, and the stream then releases what it loaded.
    """
    entered = False
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_when_set, stopping, tg.cancel_scope)
        try:
            await events.__aenter__()
            entered = True
        except Exception as exc:  # raised as itself, not in the task group's group
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error
    # pylibbpf loads holding the GIL: a signal that came meanwhile is handled
    # only now, a few loop turns on. Before the "tracing" line, it is still
    # an interrupted start.
    for _ in range(START_SIGNAL_TURNS):
        await anyio.lowlevel.checkpoint()
    if entered and stopping.is_set():
        events.close()
        return False
    return entered


async def _trace(args: argparse.Namespace, run: ExecRun, stopping: anyio.Event) -> None:
    accept = filter_from_args(args)
    table = table_from_args(args)  # -t counts from here
    fmt: Callable[[ExecEvent], str] = format_json if args.json else table.row
    exit_fmt = format_exit_json if args.json else table.exit_row
    try:
        # In the kernel where it can be (what they leave out never enters the
        # ring, nor the summary's counts); ExecFilter checks them again.
        uids = set(args.uid or ())
        events = exec_events(ring_size=args.ring_size, failed=accept.failed,
                             cgroup=args.cgroup, uid=uids.pop() if len(uids) == 1 else None,
                             exits=args.exits)
        if accept.failed:
            run.hidden = "successful execs not traced"
        if not await _start(events, stopping):
            return
        try:
            sys.stdout.flush()
            gone = anyio.Event()
            out = LineWriter(sys.stdout.fileno(), on_broken=_setter(gone))
            try:
                _announce(args, table, out, run)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_set_when_set, gone, stopping)
                    tg.start_soon(_print_events, events, accept, fmt, exit_fmt, out, run)
                    tg.start_soon(_warn_on_losses, events, out)
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
        finally:
            _finish(events, run)
    except NotPrivilegedError as exc:
        _error("exec", exc)
        run.exit_status = EXIT_NOPERM
    except AioRingBufError as exc:  # kernel too old, no tracefs, object missing, bad size, ...
        _error("exec", exc)
        run.exit_status = EXIT_ERROR


async def _set_when_set(event: anyio.Event, then: anyio.Event) -> None:
    await event.wait()
    then.set()


def _announce(args: argparse.Namespace, table: Table, out: LineWriter, run: ExecRun) -> None:
    """Tell readers the probes are attached: from now on no exec is missed."""
    if not args.json:
        out.write(table.header())
    run.started = True
    print("aioringbuf exec: tracing exec() calls; Ctrl-C to stop", file=sys.stderr, flush=True)


def _losses(events: ExecEvents, out: LineWriter) -> tuple[int, int, int, int]:
    """Kernel drops, of them at entry, queue drops, lines not written: so far."""
    st = events.stats()
    return (st.kernel_drops or 0, events.enter_drops() or 0, st.queue_drops, out.dropped)


def loss_warning(new: Sequence[int]) -> str:
    """The live warning: what was lost since the last one (or the start)."""
    kernel, at_entry, queue, unwritten = new
    entry = f" ({at_entry} at entry: too many execs in flight)" if at_entry else ""
    hint = "; a larger --ring-size holds longer bursts" if kernel > at_entry else ""
    return (f"aioringbuf exec: warning: lost since the last warning: {kernel} kernel "
            f"drops{entry}, {queue} queue drops, {unwritten} lines not written{hint}")


async def _warn_on_losses(events: ExecEvents, out: LineWriter) -> None:
    """Losses as they happen, on stderr, at most once every WARN_EVERY seconds."""
    last = (0, 0, 0, 0)
    while True:
        await anyio.sleep(WARN_EVERY)
        now = _losses(events, out)
        if now != last:
            new = [n - o for n, o in zip(now, last, strict=True)]
            print(loss_warning(new), file=sys.stderr, flush=True)
            last = now


SHOWN_PIDS_MAX = 65536  # --line: processes whose exit is still to come


async def _print_events(
    events: ExecEvents,
    accept: ExecFilter,
    fmt: Callable[[ExecEvent], str],
    exit_fmt: Callable[[ExitEvent], str],
    out: LineWriter,
    run: ExecRun,
) -> None:
    # --line: exits have no argv, so an exit is shown if its exec was.
    shown_pids: dict[int, None] | None = {} if accept.line is not None else None
    async for ev in events:
        if isinstance(ev, ExitEvent):
            if shown_pids is not None:
                if ev.pid not in shown_pids:
                    continue
                del shown_pids[ev.pid]
            if exit_accepted(accept, ev):
                out.write(exit_fmt(ev))
                run.shown += 1
            continue
        if accept(ev):
            out.write(fmt(ev))  # never blocks: the writer thread takes it line by line
            run.shown += 1
            if shown_pids is not None:
                shown_pids[ev.pid] = None
                if len(shown_pids) > SHOWN_PIDS_MAX:
                    del shown_pids[next(iter(shown_pids))]  # the oldest


def _finish(events: ExecEvents, run: ExecRun) -> None:
    events.close()  # detached already, unless a second signal came first
    run.enter_drops = events.enter_drops()
    run.stats = events.stats()
    run.unread = events.unread()
    run.filtered = events.filtered()
