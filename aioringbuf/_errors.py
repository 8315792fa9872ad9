"""The exceptions aioringbuf raises: few, specific, each saying what to do.

Every one derives from :class:`AioRingBufError` and also from the standard
exception it refines (``PermissionError``, ``ValueError``, ...), so code that
already catches the standard kind keeps working.
"""

from __future__ import annotations

PRIVILEGE_HINT = (
    "run as root, or grant CAP_BPF and CAP_PERFMON (plus CAP_SYS_ADMIN on kernels "
    "older than 5.8 or to attach tracepoints with perf_event_paranoid > 1)"
)


class AioRingBufError(Exception):
    """Base class of every error raised by aioringbuf."""


class NotPrivilegedError(AioRingBufError, PermissionError):
    """The kernel refused a BPF operation for lack of privileges."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: operation not permitted; {PRIVILEGE_HINT}")


class KernelTooOldError(AioRingBufError, OSError):
    """The running kernel lacks a feature (ring buffers need Linux >= 5.8)."""


class BpfObjectError(AioRingBufError, OSError):
    """A BPF object file is missing, is not BPF, or failed to load."""


class MapNotFoundError(AioRingBufError, LookupError):
    """No map of that name in the BPF object."""


class WrongMapTypeError(AioRingBufError, TypeError):
    """The map exists but is not of the type the stream needs."""


class RingSizeError(AioRingBufError, ValueError):
    """A ring size the kernel would refuse with a bare EINVAL."""


class EventLayoutError(AioRingBufError, TypeError):
    """An Event subclass whose annotations do not describe a C layout."""


class DecodeError(AioRingBufError, ValueError):
    """A record that does not fit the event type's layout."""


class RecordSizeError(DecodeError):
    """A record whose size does not match the event type's C size."""


class ConsumerBusyError(AioRingBufError, RuntimeError):
    """The ring already has a consumer in this process (one ring, one consumer)."""


class UnsupportedMapError(AioRingBufError, OSError):
    """A map flavour aioringbuf refuses to consume (e.g. BPF_F_RB_OVERWRITE)."""
