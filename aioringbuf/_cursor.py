"""The cursor: the batch being handed out, and the fast path of ``__anext__``.

Every object that ``async for`` runs on in aioringbuf (a raw stream, an
overflow queue, and so a queued stream and a broadcast subscription)
derives from ``Cursor`` and keeps its ready items in three attributes:

* ``_batch``: a list;
* ``_idx``: the index of the next item to hand out;
* ``_nbatch``: the end of the ready items (``_batch[_idx:_nbatch]``);
  it may be less than ``len(_batch)``, when later items must wait (an
  overflow queue holds them back behind an in-band exception).

``__anext__`` hands out ``_batch[_idx]`` and advances ``_idx`` while
``_idx < _nbatch``, and otherwise awaits the subclass's coroutine
``_anext_slow()``, which refills the three (or raises). This module is the
pure-Python reference; ``_fastring.Cursor`` is its C twin (same attributes,
same contract), whose ``__anext__`` returns an already-completed awaitable
instead of creating a coroutine per item. ``_fast`` picks one. Here
``__anext__`` stays a coroutine: in Python a prepared awaitable needs a
generator per await (dearer), and an async generator would not be the
stream and would end at the first exception through it (see
docs/architecture.md, "The cursor" and "The pure-Python path").
"""

from __future__ import annotations

from typing import Any


class PyCursor:
    """The pure-Python cursor (see the module doc for the contract)."""

    _batch: list[Any]
    _idx: int
    _nbatch: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # As the C twin's tp_new: an empty batch, whatever the subclass's
        # __init__ takes (or a subclass's __new__ builds the rest).
        self = object.__new__(cls)
        self._batch = []
        self._idx = 0
        self._nbatch = 0
        return self

    async def __anext__(self) -> Any:
        i = self._idx
        if i < self._nbatch:
            self._idx = i + 1
            return self._batch[i]
        return await self._anext_slow()

    async def _anext_slow(self) -> Any:
        raise NotImplementedError
