"""The options every stream takes: typed once, validated once, passed down.

``StreamOptions`` is built once, where the user's keywords arrive
(``RingBuffer(...)``, ``PerfBuffer(...)``, ``exec_events(...)``), and every
layer below takes the object, never the loose keywords again.
``StreamKwargs`` is the same five names for type checkers
(``**options: Unpack[StreamKwargs]``); a test keeps the two equal.
See docs/architecture.md, "Options".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

Overflow = Literal["block", "drop_oldest", "drop_newest"]
OVERFLOW: tuple[Overflow, ...] = ("block", "drop_oldest", "drop_newest")
OnDecodeError = Literal["count", "raise"]


class StreamKwargs(TypedDict, total=False):
    """The stream options as keyword arguments (for ``Unpack``)."""

    maxsize: int
    overflow: Overflow
    flush_interval: float | None
    budget: int
    on_decode_error: OnDecodeError


@dataclass(frozen=True)
class StreamOptions:
    """What a stream does with the records it reads, checked before anything opens.

    ``overflow="block"`` makes a raw stream (the iterating task drains the
    ring, at most ``min(budget, maxsize)`` records at a time); a drop
    policy makes a queued stream (a task drains ``budget`` records at a
    time into a queue of ``maxsize``).
    """

    maxsize: int = 4096
    overflow: Overflow = "block"
    flush_interval: float | None = None
    budget: int = 1024
    on_decode_error: OnDecodeError = "count"

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {OVERFLOW}, not {self.overflow!r}")
        if not isinstance(self.maxsize, int) or self.maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {self.maxsize!r}")
        if not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"budget must be a positive int, not {self.budget!r}")
        if self.flush_interval is not None and not self.flush_interval > 0:
            raise ValueError(
                f"flush_interval must be > 0 seconds or None, not {self.flush_interval!r}"
            )
        if self.on_decode_error not in ("count", "raise"):
            raise ValueError("on_decode_error must be 'count' or 'raise'")

    @classmethod
    def of(cls, options: dict[str, Any], **defaults: Any) -> StreamOptions:
        """From user keywords; ``defaults`` are a stream kind's own (PerfBuffer's flush)."""
        return cls(**{**defaults, **options})

    @property
    def queued(self) -> bool:
        """Whether these options make a queued stream (a drop policy)."""
        return self.overflow != "block"

    @property
    def strict(self) -> bool:
        return self.on_decode_error == "raise"

    def for_pump(self) -> StreamOptions:
        """The raw stream under a queue: it reads ``budget`` records per drain."""
        return dataclasses.replace(self, overflow="block", maxsize=self.budget)
