"""What a client sees of an exec event: its filter and its JSON form.

The filter comes from the query string of ``/events``. Its ``name`` is an
RE2 pattern (time linear in the text, whatever the pattern: a stranger
writes the pattern and another one the argv it is matched against), and
it runs in the client's own task (``sse.py``), not in the hub's pump: one
client's filter costs that client's time only, never the other clients'
or the kernel consumer's. The JSON form is computed once per event,
whatever the number of clients, because the hub hands the same object to
every subscription.
"""

from __future__ import annotations

import collections
from typing import Any

import msgspec
from redact import Redactor

from aioringbuf import MissingDependencyError
from aioringbuf.exec import ExecEvent, ExecFilter, Pattern, PatternError


def filter_from_query(query: Any) -> ExecFilter | None:
    """``?pid=&ppid=&uid=`` (each repeatable) and ``?name=REGEX`` from Starlette's
    QueryParams; None when nothing is filtered. ValueError if bad.

    ``name`` matches as ``aioringbuf exec --name`` does (the same ExecFilter
    and RE2 pattern, at most 256 characters).
    """

    def ints(key: str) -> frozenset[int]:
        try:
            return frozenset(int(v) for v in query.getlist(key) if v != "")
        except ValueError:
            raise ValueError(f"{key} must be an integer") from None

    name = query.get("name") or None
    pattern = None
    if name is not None:
        try:
            pattern = Pattern(name)
        except (PatternError, MissingDependencyError) as exc:
            raise ValueError(f"name: {exc}") from None
    flt = ExecFilter(ints("pid"), ints("ppid"), ints("uid"), pattern)
    return flt if flt != ExecFilter() else None


class EventEncoder:
    """ExecEvent -> one SSE message (``event: exec``, JSON data), redacted, cached."""

    def __init__(self, redactor: Redactor, cache_size: int = 4096) -> None:
        self.redactor = redactor
        self._json = msgspec.json.Encoder()
        # id(event) -> (event, message); keeping the event pins its id.
        self._cache: collections.OrderedDict[int, tuple[ExecEvent, bytes]] = \
            collections.OrderedDict()
        self._cache_size = cache_size

    def redacted(self, ev: ExecEvent) -> ExecEvent:
        """The event a client gets: argv masked, in the CLI's --json form
        (msgspec.json.encode of the ExecEvent: lossless, every field)."""
        return msgspec.structs.replace(ev, argv=self.redactor(ev.argv))

    def sse(self, ev: Any) -> bytes:
        """An ExecEvent, or a FleetEvent (``--nats``): its event with a ``host`` member."""
        hit = self._cache.get(id(ev))
        if hit is not None and hit[0] is ev:
            return hit[1]
        host = getattr(ev, "host", None)
        body = self._json.encode(self.redacted(ev if host is None else ev.event))
        if host is not None:  # {"host": ..., then the event's members}
            body = b'{"host":' + self._json.encode(host) + b"," + body[1:]
        # msgspec writes JSON on one line: one "data:" line per message.
        message = b"event: exec\ndata: " + body + b"\n\n"
        self._cache[id(ev)] = (ev, message)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return message
