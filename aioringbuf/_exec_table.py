"""``aioringbuf exec``'s table: execsnoop's columns, every string escaped.

Its own module so that the local trace (``_cli``) and the fleet view
(``_ship_cli``) print the same rows. Columns, as execsnoop's: ``[TIME]``
(``-T``), ``[TIME(s)]`` (``-t``, seconds since the trace started),
``[UID]`` (``-U``), then PCOMM, PID, PPID, RET and ARGS.
"""

from __future__ import annotations

import shlex
import signal
from dataclasses import dataclass, field
from time import localtime, monotonic_ns, strftime

from ._escape import terminal
from ._exec import ExecEvent, ExitEvent

DEFAULT_MAX_ARGS = 20  # execsnoop's default


def quoted(arg: str) -> str:
    """``-q``: in double quotes, as execsnoop prints, with ``"`` as ``\\"``.

    :func:`terminal` has already written every backslash as ``\\\\``, so a
    ``\\"`` in the output is always an escaped quote, never a forged one.
    """
    return '"' + terminal(arg).replace('"', '\\"') + '"'


def shell_quoted(arg: str) -> str:
    """The default: quoted only where a shell would need it (``shlex.quote``)."""
    return shlex.quote(terminal(arg))


@dataclass(frozen=True)
class Table:
    """Which columns and how ARGS is written; :meth:`row` for one exec."""

    time: bool = False  # -T: HH:MM:SS, local time
    timestamp: bool = False  # -t: seconds since start_ns
    uid: bool = False  # -U
    quote: bool = False  # -q
    max_args: int | None = DEFAULT_MAX_ARGS  # argv strings shown, argv[0] included
    start_ns: int = field(default_factory=monotonic_ns)  # CLOCK_MONOTONIC, as ts_ns

    def header(self) -> str:
        return self._prefix("TIME", "TIME(s)", "UID") + (
            f"{'PCOMM':<16} {'PID':>7} {'PPID':>7} {'RET':>4} ARGS")

    def _prefix(self, clock: str, seconds: str, uid: str) -> str:
        parts = []
        if self.time:
            parts.append(f"{clock:<8} ")
        if self.timestamp:
            parts.append(f"{seconds:<8} ")
        if self.uid:
            parts.append(f"{uid:>6} ")
        return "".join(parts)

    def _columns(self, wall_ns: int, ts_ns: int, uid: int) -> str:
        clock = strftime("%H:%M:%S", localtime(wall_ns // 1_000_000_000))
        return self._prefix(clock, f"{(ts_ns - self.start_ns) / 1e9:.3f}", str(uid))

    def args(self, ev: ExecEvent) -> str:
        """ARGS: at most ``max_args`` strings, then `` ...`` if anything was left out."""
        q = quoted if self.quote else shell_quoted
        argv = ev.argv if self.max_args is None else ev.argv[: self.max_args]
        text = " ".join(map(q, argv)) or q(ev.filename)
        if ev.args_truncated or len(argv) < len(ev.argv):
            text += " ..."
        return text

    def row(self, ev: ExecEvent, wall_ns: int | None = None) -> str:
        """One exec; ``wall_ns`` overrides the TIME column's clock (another host's)."""
        columns = self._columns(ev.wall_time_ns if wall_ns is None else wall_ns, ev.ts_ns,
                                ev.uid)
        return (f"{columns}{terminal(ev.comm):<16} {ev.pid:>7} {ev.ppid:>7} {ev.ret:>4} "
                f"{self.args(ev)}")

    def exit_row(self, ev: ExitEvent) -> str:
        """An exit: RET is the exit code, ARGS how and when."""
        if ev.signal:
            try:
                how = signal.Signals(ev.signal).name
            except ValueError:
                how = f"signal {ev.signal}"
        else:
            how = f"exit {ev.exit_code}"
        since = "exec" if ev.since_exec else "start"
        return (f"{self._columns(ev.wall_time_ns, ev.ts_ns, ev.uid)}{terminal(ev.comm):<16} "
                f"{ev.pid:>7} {ev.ppid:>7} {ev.exit_code:>4} "
                f"[{how}, {ev.duration_ns / 1e9:.3f} s after its {since}]")
