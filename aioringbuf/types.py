"""The types behind aioringbuf's root API, and the tools for Event types.

For annotations and ``isinstance``: a program gets these objects from the
root API (``load()``, ``RingBuffer(...)``, ``hub.subscribe()``, ...) and
rarely builds them itself::

    from aioringbuf.types import BpfObject, QueuedStream, Subscription

``RingBuffer(...)``, ``PerfBuffer(...)`` and ``exec_events()`` return a
:class:`RawStream` subclass for ``overflow="block"`` and a
:class:`QueuedStream` over one for a drop policy (docs/architecture.md,
"Two streams"). :class:`AckedRing` is a ring buffer whose space goes back
to the kernel only when acknowledged (``aioringbuf ship`` uses it).

:func:`layout_of` shows an Event type's C layout, :func:`dtype_of` its
numpy dtype (for ``stream.arrays()``), :func:`decode` decodes one record
with it, e.g. in a test; :func:`tagged` makes one type of several tagged
Event types that share a ring. :func:`include_dir` is where the installed
``aioringbuf.bpf.h`` is, for building your own BPF programs (clang ``-I``).
"""

from ._acked import AckedRing, AckedStats, RingRecord
from ._broadcast import BroadcastStats, Policy, SubscriberStats, Subscription
from ._codec import Layout, decode, layout_of
from ._columns import dtype_of
from ._history import Numbered
from ._include import include_dir
from ._loader import BpfObject, check_privileges
from ._metrics import MetricsRegistration
from ._options import Overflow, StreamKwargs, StreamOptions
from ._queue import OverflowQueue, QueuePolicy, QueueStats
from ._queued import QueuedStream
from ._stream import RawStream
from ._union import tagged

__all__ = [
    "BpfObject", "check_privileges",
    "RawStream", "QueuedStream", "StreamOptions", "StreamKwargs", "Overflow",
    "AckedRing", "AckedStats", "RingRecord",
    "OverflowQueue", "QueuePolicy", "QueueStats",
    "Subscription", "SubscriberStats", "BroadcastStats", "Policy", "Numbered",
    "MetricsRegistration",
    "Layout", "layout_of", "dtype_of", "decode", "tagged", "include_dir",
]
