"""What a client sees of an exec event: its filter and its JSON form.

The filter comes from the query string of ``/events`` and runs inside the
hub (``hub.subscribe(filter=...)``), so events a client did not ask for
never take space in its queue. The JSON form is computed once per event,
whatever the number of clients, because the hub hands the same object to
every subscription.
"""

from __future__ import annotations

import collections
import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from redact import Redactor

from aioringbuf import ExecEvent

MAX_REGEX = 256  # characters: the name filter runs in the hub's task, for every event


@dataclass(frozen=True)
class ExecFilter:
    """``?pid=&ppid=&uid=`` (each repeatable) and ``?name=REGEX``; empty means all.

    ``name`` is searched (``re.search``) in the command name, the last part
    of the file name and argv[0], as ``aioringbuf exec --name`` does.
    """

    pids: frozenset[int] = frozenset()
    ppids: frozenset[int] = frozenset()
    uids: frozenset[int] = frozenset()
    name: re.Pattern[str] | None = None

    @classmethod
    def from_query(cls, query: Any) -> ExecFilter | None:
        """From Starlette's QueryParams; None when nothing is filtered. ValueError if bad."""

        def ints(key: str) -> frozenset[int]:
            try:
                return frozenset(int(v) for v in query.getlist(key) if v != "")
            except ValueError:
                raise ValueError(f"{key} must be an integer") from None

        name = query.get("name") or None
        pattern = None
        if name is not None:
            if len(name) > MAX_REGEX:
                raise ValueError(f"name: at most {MAX_REGEX} characters")
            try:
                pattern = re.compile(name)
            except re.error as exc:
                raise ValueError(f"name: bad regular expression: {exc}") from None
        flt = cls(ints("pid"), ints("ppid"), ints("uid"), pattern)
        return flt if flt != cls() else None

    def __call__(self, ev: ExecEvent) -> bool:
        if self.pids and ev.pid not in self.pids:
            return False
        if self.ppids and ev.ppid not in self.ppids:
            return False
        if self.uids and ev.uid not in self.uids:
            return False
        if self.name is None:
            return True
        search = self.name.search
        return bool(search(ev.comm) or search(ev.filename.rpartition("/")[2])
                    or (ev.argv and search(ev.argv[0])))


def printable(s: str) -> str:
    """Kernel bytes that were not UTF-8 (surrogate escapes) as ``\\xNN`` text, for JSON."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class EventEncoder:
    """ExecEvent -> one SSE message (``event: exec``, JSON data), redacted, cached."""

    def __init__(self, redactor: Redactor, cache_size: int = 4096) -> None:
        self.redactor = redactor
        self._json = msgspec.json.Encoder()
        # id(event) -> (event, message); keeping the event pins its id.
        self._cache: collections.OrderedDict[int, tuple[ExecEvent, bytes]] = \
            collections.OrderedDict()
        self._cache_size = cache_size

    def as_dict(self, ev: ExecEvent) -> Mapping[str, Any]:
        wall = ev.wall_time_ns
        when = datetime.datetime.fromtimestamp(wall // 1_000_000_000, datetime.timezone.utc)
        return {
            "time": f"{when:%Y-%m-%dT%H:%M:%S}.{wall % 1_000_000_000 // 1000:06d}Z",
            "pid": ev.pid, "tid": ev.tid, "ppid": ev.ppid, "uid": ev.uid, "gid": ev.gid,
            "comm": printable(ev.comm),
            "filename": printable(ev.filename),
            "argv": [printable(a) for a in self.redactor(ev.argv)],
            "args_truncated": ev.args_truncated,
            "ret": ev.ret,
            "syscall": ev.syscall,
        }

    def sse(self, ev: ExecEvent) -> bytes:
        hit = self._cache.get(id(ev))
        if hit is not None and hit[0] is ev:
            return hit[1]
        # msgspec writes JSON on one line: one "data:" line per message.
        message = b"event: exec\ndata: " + self._json.encode(self.as_dict(ev)) + b"\n\n"
        self._cache[id(ev)] = (ev, message)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return message
