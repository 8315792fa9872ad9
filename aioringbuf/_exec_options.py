"""``aioringbuf exec``'s options and help: execsnoop's short options, its own long ones.

Its own module so that ``_cli`` holds what the trace does and this what a
user can type: the options of libbpf-tools' and BCC's execsnoop (``-x``,
``-t``, ``-T``, ``-U``, ``-u``, ``-n``, ``-l``, ``-c``, ``-q``,
``--max-args``) keep their meaning, and the long options aioringbuf had
before them keep theirs.
"""

from __future__ import annotations

import argparse
import pwd
from typing import Any

from . import __version__
from ._cgroup import cgroup_of
from ._cli_common import BACKENDS, _positive_float
from ._errors import MissingDependencyError
from ._exec import DEFAULT_RING_SIZE
from ._exec_table import DEFAULT_MAX_ARGS
from ._pattern import Pattern, PatternError

VERSION = f"aioringbuf {__version__}"


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


EXEC_EPILOG = """\
examples:
  aioringbuf exec                  # successful exec()s, as they happen
  aioringbuf exec -x               # include failed exec()s
  aioringbuf exec --failed         # only failed exec()s
  aioringbuf exec -T -U            # with the time (HH:MM:SS) and the UID
  aioringbuf exec -t               # with seconds since the trace started
  aioringbuf exec -u 1000          # only UID 1000 (a name works too)
  aioringbuf exec -q               # "quote" every argument
  aioringbuf exec -n main          # only programs whose name contains "main"
  aioringbuf exec -l tpkg          # only command lines that contain "tpkg"
  aioringbuf exec -c /sys/fs/cgroup/unified/svc   # only in this cgroup (and below)
  aioringbuf exec --json | jq .argv               # lossless JSON, one object a line
  aioringbuf exec --exits --duration 10           # exits too, for ten seconds

Columns: [TIME] (-T: local time), [TIME(s)] (-t: seconds since the trace
started), [UID] (-U: real uid), PCOMM (the new program's name, or the
caller's if the exec failed), PID, PPID, RET (0 or -errno), ARGS (argv,
shell-quoted, or in double quotes with -q; " ..." marks arguments left out:
beyond --max-args, or beyond what the kernel keeps, 128 strings or 4 KiB).
Control characters, DEL, C1 and format characters, and bytes that are not
UTF-8 are shown as escapes (\\x1b, \\n, \\u0085, \\xff), with -q too, and a
backslash as \\\\ (so \\" is always a quote inside an argument): nothing a
traced process chooses reaches the terminal as a control.

Successful and failed execs: like execsnoop, the table and --json show
successful execs only; -x/--fails adds failed attempts, --failed shows only
them. The choice is made in the kernel, like --uid (one value) and
--cgroup: what they leave out never enters the ring, so it is neither an
event nor a drop in the summary. The summary ends with the count of those
the success/failure choice left out ("; 9 failed execs not traced (-x shows
them)"); --uid and --cgroup leave theirs uncounted.

--json prints one object per line: msgspec.json.encode(event), every field
of aioringbuf.ExecEvent (times in nanoseconds: ts_ns on CLOCK_MONOTONIC,
realtime_ns since the epoch), which msgspec.json.decode(line,
type=ExecEvent) turns back into the same event. Each byte that is not UTF-8
is the character U+10FF00 + byte (the byte 0xff is U+10FFFF), so a real
backslash stays a backslash; aioringbuf.exec.kernel_bytes(s) gives the bytes
back. --json-schema prints the JSON Schema of these objects. With --exits,
exits are {"event": "exit", ...} objects, every field of
aioringbuf.exec.ExitEvent (its comm in the same lossless form) plus "time"
and "since_exec"; --exits --json-schema covers both kinds. --max-args and -q shape the table
only: JSON always has the whole argv the kernel kept.

--name and --line take RE2 patterns (google-re2, pip install
'aioringbuf[re2]'): matching takes time linear in the text whatever the
pattern, so no argv can stall the trace; no backreferences or lookaround.
--name is searched in PCOMM, the file name's last part and argv[0]; --line
in the whole argv the kernel kept, joined by spaces. With --line, an exit is
shown if its process's exec was.

Output is written by a thread of its own: if the reader of stdout stops
reading, lines beyond 4 MiB are dropped and counted in the summary, and
Ctrl-C or SIGTERM still end the trace at once. While it runs, records lost
in the kernel or the queue, and lines stdout did not take, are reported on
stderr as they happen (at most once a second, with the counts since the
last warning).

Stops at Ctrl-C, SIGTERM or --duration with exit status 0 and a summary on
stderr: events seen and shown, and records lost in the kernel (ring full, or
too many execs in flight) and in the queue. Ctrl-C during start-up (before
"tracing") ends it at once with status 130 (128 + the signal) and one
line. Needs root, or CAP_BPF and CAP_PERFMON with read access to
/sys/kernel/tracing (exit status 77 if not), and tracefs mounted there
(mount -t tracefs nodev /sys/kernel/tracing; exit status 1 if not).
"""


def add_exec_arguments(p: argparse.ArgumentParser) -> None:
    """`aioringbuf exec`'s options, in execsnoop's order where it has them."""
    p.add_argument("--version", action="version", version=VERSION)
    p.add_argument("-T", "--time", action="store_true",
                   help="include a TIME column (HH:MM:SS, local time)")
    p.add_argument("-t", "--timestamp", action="store_true",
                   help="include a TIME(s) column: seconds since the trace started")
    p.add_argument("-x", "--fails", action="store_true",
                   help="include failed execs (by default only successful ones are shown)")
    p.add_argument("--failed", action="store_true",
                   help="only failed execs (RET < 0)")
    p.add_argument("-u", "--uid", type=_uid, action="append", metavar="UID",
                   help="only execs by this real user id or name (repeatable)")
    p.add_argument("-U", "--print-uid", action="store_true", help="include a UID column")
    p.add_argument("-q", "--quote", action="store_true",
                   help='put every argument in double quotes ("), escaping " as \\"')
    p.add_argument("-n", "--name", type=_regex, metavar="REGEX",
                   help="only execs where REGEX (RE2 syntax) is found in the command name "
                        "(PCOMM), the last component of the file name, or argv[0]")
    p.add_argument("-l", "--line", type=_regex, metavar="REGEX",
                   help="only execs where REGEX (RE2 syntax) is found in the arguments "
                        "(argv joined by spaces)")
    p.add_argument("--max-args", type=_positive_int, default=DEFAULT_MAX_ARGS, metavar="N",
                   help=f"show at most N arguments, argv[0] included, then ' ...' "
                        f"(default: {DEFAULT_MAX_ARGS}; --json shows all)")
    p.add_argument("-c", "--cgroup", type=_cgroup, metavar="PATH",
                   help="only execs in this cgroup v2 and below it (a directory, or the path "
                        "as /proc/PID/cgroup shows it)")
    p.add_argument("--pid", type=int, action="append", metavar="PID",
                   help="only execs by process PID (repeatable)")
    p.add_argument("--ppid", type=int, action="append", metavar="PPID",
                   help="only execs by children of PPID (repeatable)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line instead of a table (lossless: see below)")
    p.add_argument("--json-schema", action="store_true",
                   help="print the JSON Schema of --json's objects and exit")
    p.add_argument("--exits", action="store_true",
                   help="also show each process's exit: code or signal, and time since its exec")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS",
                   help="stop after SECONDS")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="asyncio",
                   help="event loop to run on (default: asyncio; trio and uvloop are extras)")
    p.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE, metavar="BYTES",
                   help=f"kernel ring size, a power of two (default: {DEFAULT_RING_SIZE})")
    p.add_argument("--from", dest="source", metavar="nats://URL[,URL...]",
                   help="show the execs that `aioringbuf ship` agents sent to this NATS "
                        "JetStream (all hosts, with HOST and TIME columns) instead of this "
                        "machine's; not with -t (the hosts' clocks differ)")
    p.add_argument("--no-follow", dest="to_end", action="store_true",
                   help="with --from: stop at the end of the stream")


def add_exec_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "exec",
        help="trace every exec() on the machine, like execsnoop",
        description="Trace every execve()/execveat() on this machine, with its result.",
        epilog=EXEC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_exec_arguments(p)
    return p
