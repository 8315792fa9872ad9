"""aioringbuf: BPF ring buffer events as ``async for``, with exact drop accounting.

::

    async for ev in aioringbuf.exec_events():   # every exec on the machine
        print(ev.pid, ev.filename, ev.argv)

Your own programs:

    async with aioringbuf.load("prog.bpf.o") as obj:
        async with obj.ring_buffer("events", Sample) as events:
            async for ev in events:
                print(ev)

Every machine's execs, shipped by ``aioringbuf ship`` to NATS JetStream::

    async for fe in aioringbuf.exec.fleet_events("nats://broker:4222"):
        print(fe.host, fe.event.argv)

Many readers of one stream (one ring has one consumer)::

    async with aioringbuf.exec_events() as events, aioringbuf.Broadcast(events) as hub:
        async with hub.subscribe(maxsize=256, policy="disconnect") as sub:
            async for ev in sub: ...

The root holds what a program writes. The types it hands back (for
annotations) and the Event-type tools are in :mod:`aioringbuf.types`; the
helpers of exec tools (filters, text escaping) in :mod:`aioringbuf.exec`.
The layers below are private: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and readers
    from . import exec as exec
    from . import types as types
    from ._broadcast import Broadcast, SlowSubscriberError
    from ._codec import S8, S16, S32, S64, U8, U16, U32, U64, Array, Bytes, CStr, Event, Tail
    from ._errors import (
        AioRingBufError,
        BpfObjectError,
        ConsumerBusyError,
        DecodeError,
        EventLayoutError,
        KernelTooOldError,
        MapNotFoundError,
        MapSizeError,
        MissingDependencyError,
        NotPrivilegedError,
        RecordSizeError,
        RingSizeError,
        UnsupportedMapError,
        WrongMapTypeError,
    )
    from ._exec import ExecEvent, exec_events
    from ._loader import load
    from ._metrics import register as register_metrics
    from ._perfbuf import PerfBuffer
    from ._ringbuf import RingBuffer
    from ._stats import StreamStats

__version__ = "0.1.0"

__all__ = [
    "load", "RingBuffer", "PerfBuffer", "StreamStats", "Broadcast",
    "exec_events", "ExecEvent", "register_metrics",
    "Event", "S8", "S16", "S32", "S64", "U8", "U16", "U32", "U64",
    "Array", "Bytes", "CStr", "Tail",
    "AioRingBufError", "BpfObjectError", "ConsumerBusyError", "DecodeError",
    "EventLayoutError", "KernelTooOldError", "MapNotFoundError", "MapSizeError",
    "MissingDependencyError",
    "NotPrivilegedError", "RecordSizeError", "RingSizeError", "SlowSubscriberError",
    "UnsupportedMapError", "WrongMapTypeError",
]

# Names the root exported before 0.2, and where they are now.
_MOVED = {
    **dict.fromkeys(
        ("BpfObject", "Subscription", "BroadcastStats", "SubscriberStats",
         "MetricsRegistration", "Layout", "layout_of", "decode", "check_privileges",
         "dtype_of", "AckedRing", "AckedStats", "RingRecord"),
        "aioringbuf.types"),
    "EventStream": "aioringbuf.types (RawStream, QueuedStream)",
    **dict.fromkeys(
        ("ExecEvents", "ExecFilter", "printable", "terminal", "Pattern", "PatternError",
         "FleetEvent", "fleet_events"),
        "aioringbuf.exec"),
}


# Where each root name lives. The root imports nothing until a name is
# used (PEP 562): `import aioringbuf` is cheap, and the `aioringbuf`
# command can catch a Ctrl-C while the heavy modules load.
_HOME = {
    **dict.fromkeys(("Broadcast", "SlowSubscriberError"), "._broadcast"),
    **dict.fromkeys(("S8", "S16", "S32", "S64", "U8", "U16", "U32", "U64", "Array", "Bytes",
                     "CStr", "Event", "Tail"), "._codec"),
    **dict.fromkeys(("AioRingBufError", "BpfObjectError", "ConsumerBusyError", "DecodeError",
                     "EventLayoutError", "KernelTooOldError", "MapNotFoundError",
                     "MapSizeError", "MissingDependencyError", "NotPrivilegedError",
                     "RecordSizeError", "RingSizeError", "UnsupportedMapError",
                     "WrongMapTypeError"), "._errors"),
    **dict.fromkeys(("ExecEvent", "exec_events"), "._exec"),
    "load": "._loader",
    "register_metrics": "._metrics",
    "PerfBuffer": "._perfbuf",
    "RingBuffer": "._ringbuf",
    "StreamStats": "._stats",
}
_RENAMED = {"register_metrics": "register"}
_SUBMODULES = ("exec", "types")


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home, __name__), _RENAMED.get(name, name))
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        where = _MOVED.get(name)
        if where is None:
            raise AttributeError(f"module 'aioringbuf' has no attribute {name!r}")
        raise AttributeError(f"aioringbuf.{name} is not in the package root any more: "
                             f"import it from {where}")
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
