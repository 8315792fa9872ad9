"""A hub's numbered past: sequence numbers, an epoch, a bounded history to resume from.

Every event a :class:`~aioringbuf.Broadcast` takes gets the next number
(1, 2, 3, ...): its position in that hub's stream. ``Broadcast(source,
history=N)`` also keeps the last N events, so that a subscriber that went
away (a browser tab on a flaky network) and comes back with the last
number it saw receives what it missed, and learns exactly how many of the
events in between the history no longer held.

A number means something only within one hub. ``epoch`` (random, made
with the hub) names it: a position saved from another hub, or from an
earlier run of the same server, has another epoch and must be treated as
a gap of unknown size, never applied to this hub's numbers.
"""

from __future__ import annotations

import collections
import itertools
import secrets
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")
MAX_HISTORY = 1 << 20  # events: a bound on what a misconfigured hub can pin in memory


class Numbered(msgspec.Struct, Generic[T], frozen=True):
    """An event with its number in the hub's stream (what ``subscribe_numbered`` yields)."""

    seq: int
    event: T


def check_history(history: object) -> int:
    if not isinstance(history, int) or isinstance(history, bool) \
            or not 0 <= history <= MAX_HISTORY:
        raise ValueError(f"history must be an int from 0 to {MAX_HISTORY} (events to keep), "
                         f"not {history!r}")
    return history


class History(Generic[T]):
    """The numbering of every event a hub took, and the last ``size`` of them."""

    def __init__(self, size: int) -> None:
        self.size = check_history(size)
        self.epoch = secrets.token_hex(8)  # 64 random bits: this hub, not another
        self.kept: collections.deque[Numbered[T]] = collections.deque(maxlen=size)

    def since(self, after: int, last: int, limit: int) -> tuple[int, list[Numbered[T]]]:
        """Of the events numbered after ``after`` (up to ``last``, the newest):
        how many are missed (no longer kept, or older than the newest ``limit``),
        and the others, oldest first."""
        if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= last:
            raise ValueError(
                f"after={after!r} is not a position of this hub, whose events are numbered "
                f"1 to {last}: a number saved from another hub (or an earlier run) means "
                "nothing here; subscribe afresh, or with after=0 for all that is kept")
        first_kept = last - len(self.kept) + 1
        missed = max(0, first_kept - after - 1)
        wanted = min(last - after - missed, limit)
        missed = last - after - wanted
        return missed, list(itertools.islice(self.kept, len(self.kept) - wanted, None))
