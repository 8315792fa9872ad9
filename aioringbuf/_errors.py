"""The exceptions aioringbuf raises: few, specific, each saying what to do.

Every one derives from :class:`AioRingBufError` and also from the standard
exception it refines (``PermissionError``, ``ValueError``, ...), so code that
already catches the standard kind keeps working.
"""

from __future__ import annotations

# Capability numbers from linux/capability.h.
CAPABILITIES = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}
PRIVILEGE_HINT = (
    "run as root, or grant CAP_BPF and CAP_PERFMON; attaching tracepoints also needs "
    "read access to /sys/kernel/tracing (CAP_DAC_READ_SEARCH), and xdp/tc programs need "
    "CAP_NET_ADMIN"
)


def missing_capabilities(*names: str) -> list[str]:
    """Which of the named capabilities this process lacks (from /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("CapEff:"))
        effective = int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return list(names)
    return [n for n in names if not effective >> CAPABILITIES[n] & 1]


class AioRingBufError(Exception):
    """Base class of every error raised by aioringbuf."""


class NotPrivilegedError(AioRingBufError, PermissionError):
    """The kernel refused a BPF operation for lack of privileges."""

    def __init__(self, what: str, needed: tuple[str, ...] = ("CAP_BPF", "CAP_PERFMON")) -> None:
        missing = missing_capabilities(*needed)
        lacking = f" (this process lacks {' and '.join(missing)})" if missing else ""
        super().__init__(f"{what}: operation not permitted{lacking}; {PRIVILEGE_HINT}")
        self.missing = missing


class KernelTooOldError(AioRingBufError, OSError):
    """The running kernel lacks a feature (ring buffers need Linux >= 5.8)."""


class TracefsError(AioRingBufError, FileNotFoundError):
    """tracefs is not mounted, or lacks a tracepoint a program attaches to."""


class BpfObjectError(AioRingBufError, OSError):
    """A BPF object file is missing, is not BPF, or failed to load."""


class MapNotFoundError(AioRingBufError, LookupError):
    """No map of that name in the BPF object."""


class WrongMapTypeError(AioRingBufError, TypeError):
    """The map exists but is not of the type the stream needs."""


class MapSizeError(AioRingBufError, ValueError):
    """A map size (``max_entries``) the kernel would refuse, checked before loading."""


class RingSizeError(MapSizeError):
    """A ring size the kernel would refuse with a bare EINVAL or a BTF error."""


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


class MissingDependencyError(AioRingBufError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
