"""The hot path, in C when it was built, in pure Python otherwise.

``aioringbuf._fastring`` is an optional extension (``pip install`` builds
it when a C compiler is there, and carries on without it when not). It
provides the same three things as the pure-Python modules, with the same
behaviour, only faster, one C source (in ``aioringbuf/_c/``) per twin:

* ``walk`` and ``walk_perf`` (``walk.c``): the record walks of ``_ring``
  and ``_perfring``;
* ``Layout`` (``codec.c``): a native decoder for an Event type, the twin of
  the decoders ``_codec`` generates;
* ``Cursor`` (``cursor.c``): the base of every stream, twin of
  ``_cursor.PyCursor``, whose ``__anext__`` hands out the next event of
  the current batch without creating a coroutine;
* ``load_acquire``, ``store_release``, ``full_fence`` (``order.c``): the
  ordered accesses to the positions shared with the kernel, twins of
  ``_order``'s, which are correct on x86-64 only: ``check_cpu()`` refuses
  the pure-Python path on any other CPU, before a ring is mapped.

``AIORINGBUF_PURE=1`` in the environment forces the pure-Python path (the
test suite runs once each way); :data:`IMPLEMENTATION` says which is in use.
"""

from __future__ import annotations

import os
from typing import Any

from . import _order
from ._cursor import PyCursor
from ._perfring import walk_perf as _py_walk_perf
from ._ring import walk as _py_walk

PURE = os.environ.get("AIORINGBUF_PURE", "").lower() not in ("", "0", "false", "no")

_fastring: Any = None
if not PURE:
    try:
        from . import _fastring  # type: ignore[attr-defined, no-redef]
    except ImportError:
        _fastring = None


if _fastring is not None:
    IMPLEMENTATION = "c"
    walk = _fastring.walk
    walk_perf = _fastring.walk_perf
    Cursor: Any = _fastring.Cursor
    Layout: Any = _fastring.Layout
    load_acquire = _fastring.load_acquire
    store_release = _fastring.store_release
    full_fence = _fastring.full_fence

    def check_cpu() -> None:
        """C atomics are correct on any CPU."""
else:
    IMPLEMENTATION = "python"
    walk = _py_walk
    walk_perf = _py_walk_perf
    Cursor = PyCursor
    Layout = None
    load_acquire = _order.load_acquire
    store_release = _order.store_release
    full_fence = _order.full_fence
    check_cpu = _order.require_tso
