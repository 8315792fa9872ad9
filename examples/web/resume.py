"""Where a client resumes: each event's SSE ``id:``, and ``Last-Event-ID`` read strictly.

An id is ``EPOCH-SEQ``: the hub's epoch (16 hex digits, random per server
run) and the event's number in the hub's stream. A browser's EventSource
sends the last id it saw as the ``Last-Event-ID`` header when it
reconnects by itself; a client that cannot set headers (or the page, when
it must make a new EventSource) gives ``?last_event_id=`` instead. The
header wins when both are there: EventSource keeps the URL it was made
with, so its query may hold an older id than its header.

What a client sends here is hostile input, so:

* an id that is not exactly ``EPOCH-SEQ`` (at most 36 characters, SEQ a
  decimal without leading zeros), given twice, or numbered beyond the
  newest event of this run is answered with 400 and a line saying what
  to do (it was never sent by this server);
* an id of another epoch is well formed but from an earlier run of the
  server (or another server): its numbers mean nothing here. The client
  is resumed from this run's beginning (what the history still holds)
  and told of a gap it cannot be told the size of (``exact: false``).

Nothing of a refused id is echoed back.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

HEADER = "last-event-id"
PARAM = "last_event_id"
MAX_ID = 36  # 16 hex digits, "-", at most 19 digits
_ID = re.compile(r"([0-9a-f]{16})-(0|[1-9][0-9]{0,18})", re.ASCII)


class Resume(NamedTuple):
    """Where to subscribe: ``after`` for ``hub.subscribe_numbered`` (None: from now);
    ``exact`` is False when the client's id was from another run (a gap of unknown size)."""

    after: int | None
    exact: bool = True


def event_id(epoch: str, seq: int) -> bytes:
    return b"%s-%d" % (epoch.encode(), seq)


def resume_point(request: Any, epoch: str, newest: int) -> Resume:
    """The client's resume point from its request; ValueError (for a 400) if bad."""
    given = [v for v in request.headers.getlist(HEADER) if v]
    if not given:
        given = [v for v in request.query_params.getlist(PARAM) if v]
    if not given:
        return Resume(None)
    if len(given) > 1:
        raise ValueError(f"give one Last-Event-ID (header or ?{PARAM}=), not {len(given)}")
    text = given[0]
    match = _ID.fullmatch(text) if len(text) <= MAX_ID else None
    if match is None:
        raise ValueError(
            f"Last-Event-ID must be an id this server sent (EPOCH-SEQ, at most {MAX_ID} "
            "characters); drop it to subscribe afresh")
    if match.group(1) != epoch:
        return Resume(0, exact=False)
    seq = int(match.group(2))
    if seq > newest:
        raise ValueError("Last-Event-ID is beyond the newest event of this server: it never "
                         "sent that id; drop it to subscribe afresh")
    return Resume(seq)
