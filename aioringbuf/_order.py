"""Ordered loads and stores of the words the kernel shares with us, in pure Python.

The twin of ``aioringbuf/_c/order.c`` and the one place the pure-Python
path's memory-ordering assumption lives: it is correct on x86-64 and
nowhere else, and :func:`require_tso` refuses to run it elsewhere.

Why it holds on x86-64 (TSO): loads are not reordered with older loads,
and stores are not reordered with older loads or stores, so an aligned
8-byte plain load is an acquire and an aligned 8-byte plain store is a
release. ``struct`` with native ``Q`` at an 8-aligned offset compiles to
exactly one such load or store (a fixed 8-byte memcpy), and a record
header read by ``_ring.walk`` (native ``I``, 4-aligned) to one 4-byte
load. The one reordering TSO allows is a later load before an older
store, which :func:`full_fence` prevents: acquiring an uncontended lock
executes a LOCK-prefixed read-modify-write (CPython's locks are built on
atomic compare-and-exchange), and a locked instruction is a full barrier
on x86-64. On weakly ordered CPUs (arm64, POWER, RISC-V) none of this
holds: there the C extension's atomics are the only correct path.
"""

from __future__ import annotations

import platform
import struct
import threading
from typing import Any

from ._errors import AioRingBufError

_U64 = struct.Struct("Q")  # native: one aligned 8-byte access
_fence_lock = threading.Lock()


class UnsupportedCPUError(AioRingBufError, RuntimeError):
    """The pure-Python hot path cannot read the kernel's rings on this CPU."""


def require_tso() -> None:
    """Refuse the pure-Python path anywhere but x86-64 (see the module docstring)."""
    machine = platform.machine()
    if machine != "x86_64":
        raise UnsupportedCPUError(
            f"aioringbuf's pure-Python hot path is only correct on x86-64, and this is "
            f"{machine or 'an unknown CPU'}: its memory ordering needs the C extension. "
            "Build it (pip install aioringbuf with gcc and the Python headers installed, "
            "e.g. apt-get install gcc python3-dev) and unset AIORINGBUF_PURE."
        )


def load_acquire(buf: Any, offset: int) -> int:
    """The u64 at ``offset``: a plain aligned load, an acquire on x86-64."""
    return _U64.unpack_from(buf, offset)[0]  # type: ignore[no-any-return]


def store_release(buf: Any, offset: int, value: int) -> None:
    """Store the u64 at ``offset``: a plain aligned store, a release on x86-64."""
    _U64.pack_into(buf, offset, value)


def full_fence() -> None:
    """A full barrier: a locked read-modify-write, which x86-64 never reorders."""
    with _fence_lock:
        pass
