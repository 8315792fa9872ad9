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

    async for fe in aioringbuf.fleet_events("nats://broker:4222"):
        print(fe.host, fe.event.argv)

Many readers of one stream (one ring has one consumer)::

    async with aioringbuf.exec_events() as events, aioringbuf.Broadcast(events) as hub:
        async with hub.subscribe(maxsize=256, policy="disconnect") as sub:
            async for ev in sub: ...
"""

from ._acked import AckedRing, AckedStats, RingRecord
from ._broadcast import (
    Broadcast,
    BroadcastStats,
    SlowSubscriberError,
    SubscriberStats,
    Subscription,
)
from ._codec import (
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    Array,
    Bytes,
    CStr,
    Event,
    Layout,
    Tail,
    decode,
    layout_of,
)
from ._columns import dtype_of
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
from ._escape import printable, terminal
from ._exec import ExecEvent, ExecEvents, ExecFilter, exec_events
from ._fleet import FleetEvent, fleet_events
from ._loader import BpfObject, check_privileges, load
from ._metrics import MetricsRegistration
from ._metrics import register as register_metrics
from ._pattern import Pattern, PatternError
from ._perfbuf import PerfBuffer
from ._ringbuf import RingBuffer
from ._stats import StreamStats
from ._stream import EventStream

__version__ = "0.1.0"

__all__ = [
    "S8", "S16", "S32", "S64", "U8", "U16", "U32", "U64",
    "Array", "Bytes", "CStr", "Event", "Layout", "Tail", "decode", "layout_of",
    "dtype_of",
    "AioRingBufError", "BpfObjectError", "ConsumerBusyError", "DecodeError",
    "EventLayoutError", "KernelTooOldError", "MapNotFoundError", "MapSizeError",
    "MissingDependencyError",
    "NotPrivilegedError",
    "RecordSizeError", "RingSizeError", "UnsupportedMapError", "WrongMapTypeError",
    "BpfObject", "check_privileges", "load", "StreamStats", "RingBuffer", "PerfBuffer",
    "EventStream",
    "ExecEvent", "ExecEvents", "ExecFilter", "exec_events", "printable", "terminal",
    "Pattern", "PatternError",
    "Broadcast", "BroadcastStats", "SlowSubscriberError", "SubscriberStats", "Subscription",
    "MetricsRegistration", "register_metrics",
    "AckedRing", "AckedStats", "RingRecord", "FleetEvent", "fleet_events",
]
