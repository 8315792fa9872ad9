"""What the ``aioringbuf`` subcommands share: exit statuses, backends, signals,
errors, and the exec event's table row and JSON line.

Its own module so that the subcommands (``_cli``'s exec, ``_exporter``,
``_ship_cli``) import it, and ``_cli`` imports them, without a cycle.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import msgspec

from ._exec import ExecEvent, ExecFilter, ExitEvent
from ._exec_table import Table

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOPERM = 77  # sysexits.h EX_NOPERM
EXIT_USAGE = 2  # as argparse exits on a usage error
EXIT_SIGNAL = 128  # + the signal's number: interrupted before the work began (130: Ctrl-C)

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def _error(command: str, message: object) -> None:
    print(f"aioringbuf {command}: {message}", file=sys.stderr, flush=True)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {text}")
    return value


def failed_from_args(args: argparse.Namespace) -> bool | None:
    """The result filter: --failed only failures, -x/--fails both, else
    (execsnoop's default) only successful execs."""
    if args.failed:
        return True
    return None if args.fails else False


def filter_from_args(args: argparse.Namespace) -> ExecFilter:
    """The --pid/--ppid/--uid/--name/--line/--failed/--fails options as an ExecFilter."""
    return ExecFilter(
        pids=frozenset(args.pid or ()),
        ppids=frozenset(args.ppid or ()),
        uids=frozenset(args.uid or ()),
        name=args.name,
        failed=failed_from_args(args),
        line=args.line,
    )


def table_from_args(args: argparse.Namespace, *, time: bool = False) -> Table:
    """The -T/-t/-U/-q/--max-args options as a Table (``time``: TIME always)."""
    return Table(time=time or args.time, timestamp=args.timestamp, uid=args.print_uid,
                 quote=args.quote, max_args=args.max_args)


def backend_or_error(command: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """anyio's backend and options for --backend ``name``; None (and one line
    on stderr) if its package is not installed, rather than a traceback from
    deep inside anyio."""
    module = {"trio": "trio", "uvloop": "uvloop"}.get(name)
    if module is not None:
        try:
            __import__(module)
        except ImportError as exc:
            _error(command, f"--backend {name} needs the {module} package ({exc}): "
                            f"pip install 'aioringbuf[{module}]'")
            return None
    return BACKENDS[name]


_json = msgspec.json.Encoder()


def format_json(ev: ExecEvent) -> str:
    """The event's one JSON form, lossless (ExecEvent's text is valid Unicode)."""
    return _json.encode(ev).decode()


def json_schema(exits: bool = False) -> str:
    """The JSON Schema of :func:`format_json`'s objects; with ``exits``, of
    those or `aioringbuf exec --exits`'s exit objects (ExitEvent's fields and
    "event", "time", "since_exec")."""
    if not exits:
        schema = msgspec.json.schema(ExecEvent)
    else:
        refs, defs = msgspec.json.schema_components([ExecEvent, ExitEvent])
        exit_def = defs["ExitEvent"]
        exit_def["properties"] = {
            "event": {"const": "exit"},
            "time": {"type": "string", "format": "date-time"},
            **exit_def["properties"],
            "since_exec": {"type": "boolean"},
        }
        exit_def["required"] = ["event", "time", *exit_def["required"], "since_exec"]
        schema = {"anyOf": list(refs), "$defs": defs}
    return msgspec.json.format(msgspec.json.encode(schema)).decode()


async def _cancel_on_signals(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Turn SIGINT/SIGTERM into a cancellation (how the exporter ends)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return


STDOUT_GRACE = 0.5  # seconds at exit for queued lines to reach a slow reader


def _setter(event: anyio.Event) -> Callable[[], None]:
    """A function for another thread that sets ``event`` in this event loop."""
    token = anyio.lowlevel.current_token()

    def set_event() -> None:
        try:
            anyio.from_thread.run_sync(event.set, token=token)
        except RuntimeError:
            pass  # the loop has already ended

    return set_event


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once ``event`` is set (the stdout reader left, say)."""
    await event.wait()
    scope.cancel()


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the exit-time flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
