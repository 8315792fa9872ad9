"""Per-CPU perf rings for a perf event array: perf_event_open, mmap, enable.

A ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` holds no memory of its own: the consumer
opens one ``PERF_COUNT_SW_BPF_OUTPUT`` software event per CPU, maps its ring
(one control page, then 2^n data pages), stores the event's fd into the map
at key = cpu, and enables it. ``bpf_perf_event_output(..., BPF_F_CURRENT_CPU,
...)`` then writes into the ring of the CPU the program runs on.

Control page (``struct perf_event_mmap_page``): ``data_head`` (u64 at 1024)
is where the kernel will write next, ``data_tail`` (u64 at 1032) is where
the consumer has read up to; the consumer owns ``data_tail``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
from collections.abc import Iterable

from . import _syscall
from ._errors import KernelTooOldError, NotPrivilegedError, WrongMapTypeError
from ._fast import check_cpu, load_acquire, store_release
from ._ringmap import check_ring_size

PAGE_SIZE = mmap.PAGESIZE

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FORMAT_LOST = 1 << 4  # Linux >= 6.0: read() also returns lost samples
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
_ATTR_DISABLED = 1 << 0
_ATTR_WATERMARK = 1 << 14
_DATA_HEAD = 1024  # byte offsets in struct perf_event_mmap_page
_DATA_TAIL = 1032

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


class _PerfEventAttr(ctypes.Structure):
    """``struct perf_event_attr`` up to PERF_ATTR_SIZE_VER5 (112 bytes)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),  # the bitfield: disabled is bit 0, watermark bit 14
        ("wakeup", ctypes.c_uint32),  # wakeup_events, or wakeup_watermark with watermark set
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("_reserved", ctypes.c_uint16),
    ]


def perf_map_info(map_fd: int, per_cpu_size: int, wakeup_events: int,
                  watermark: int | None) -> _syscall.MapInfo:
    """The map behind ``map_fd``, if it is a perf event array rings can be opened
    for with these ring options (all checked here, before anything opens)."""
    if not isinstance(wakeup_events, int) or wakeup_events < 1:
        raise ValueError(f"wakeup_events must be a positive int, not {wakeup_events!r}")
    if watermark is not None and not (isinstance(watermark, int) and
                                      0 < watermark < per_cpu_size):
        raise ValueError(
            f"watermark must be a number of bytes in 1..per_cpu_size-1, not {watermark!r}"
        )
    check_ring_size(per_cpu_size)
    info = _syscall.map_info(map_fd)
    if info.type != _syscall.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
        raise WrongMapTypeError(
            f"map {info.name!r} (fd {map_fd}) is a {info.type_name} map, not a "
            "perf_event_array; PerfBuffer needs BPF_MAP_TYPE_PERF_EVENT_ARRAY "
            "(use RingBuffer for ring buffers)"
        )
    return info


def online_cpus() -> list[int]:
    """The CPUs a perf ring can be opened on (``/sys/devices/system/cpu/online``)."""
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def perf_event_open(cpu: int, wakeup_events: int, watermark: int | None,
                    count_lost: bool) -> int:
    """Open a BPF output event on ``cpu``, disabled; returns its fd."""
    attr = _PerfEventAttr()
    attr.type = PERF_TYPE_SOFTWARE
    attr.size = ctypes.sizeof(attr)
    attr.config = PERF_COUNT_SW_BPF_OUTPUT
    attr.sample_period = 1
    attr.sample_type = PERF_SAMPLE_RAW
    attr.read_format = PERF_FORMAT_LOST if count_lost else 0
    attr.flags = _ATTR_DISABLED
    if watermark is not None:
        attr.flags |= _ATTR_WATERMARK
        attr.wakeup = watermark
    else:
        attr.wakeup = wakeup_events
    fd = _libc.syscall(_syscall.syscall_number("perf_event_open"), ctypes.byref(attr),
                       -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES):
            raise NotPrivilegedError(f"opening a BPF output perf event on CPU {cpu}",
                                     ("CAP_PERFMON",))
        if err == errno.ENOSYS:
            raise KernelTooOldError("this kernel has no perf_event_open(2)")
        raise OSError(err, f"perf_event_open on CPU {cpu}: {os.strerror(err)}")
    return int(fd)


def _ioctl(fd: int, request: int, what: str) -> None:
    if _libc.ioctl(fd, request, 0) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class PerfRing:
    """One CPU's perf event: its fd, its mapping and its two position words.

    The position words are read and written with the ordered accesses of
    ``_fast``, pairing with the kernel's perf_output_put_handle() and
    __perf_output_begin() (kernel/events/ring_buffer.c; the diagram above
    perf_output_put_handle() names them A-D): ``head()`` is a load-acquire,
    the (C) that pairs with (B), its ``smp_wmb()`` before
    ``WRITE_ONCE(rb->user_page->data_head, head)``; ``publish_tail()`` is a
    store-release, our (D): the records are read before the kernel, after
    its ``READ_ONCE(rb->user_page->data_tail)`` (A), may overwrite them.
    """

    def __init__(self, cpu: int, size: int, wakeup_events: int, watermark: int | None,
                 count_lost: bool) -> None:
        self.cpu = cpu
        self.size = size
        self.mask = size - 1
        self.base = PAGE_SIZE  # the data area's offset inside ``data``
        self.count_lost = count_lost
        self.fd = perf_event_open(cpu, wakeup_events, watermark, count_lost)
        try:
            # Read-write: a read-only mapping would put the ring in overwrite mode.
            self.data = mmap.mmap(self.fd, PAGE_SIZE + size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self.fd)
            raise

    def enable(self) -> None:
        _ioctl(self.fd, PERF_EVENT_IOC_ENABLE, f"enabling the perf event of CPU {self.cpu}")

    # -- the ordered accesses ---------------------------------------------

    def head(self) -> int:
        return load_acquire(self.data, _DATA_HEAD)

    def tail(self) -> int:
        return load_acquire(self.data, _DATA_TAIL)  # ours: any load would do

    def publish_tail(self, pos: int) -> None:
        store_release(self.data, _DATA_TAIL, pos)

    # ----------------------------------------------------------------------

    def lost_samples(self) -> int:
        """Samples the kernel could not write (PERF_FORMAT_LOST), reported or not."""
        return int.from_bytes(os.read(self.fd, 16)[8:16], "little")

    def close(self) -> None:
        self.data.close()
        os.close(self.fd)


def _supports_lost_format() -> bool:
    """PERF_FORMAT_LOST needs Linux >= 6.0: probe once with a throwaway event."""
    try:
        fd = perf_event_open(online_cpus()[0], 1, None, True)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


class PerfRings:
    """The perf rings of one perf event array, installed in the map.

    ``epoll`` is one epoll fd of our own with every ring's fd in it, so the
    stream waits on a single fd whatever the number of CPUs. (perf rings
    report readable when a wakeup happened since the last poll, not while
    data is waiting: the stream drains them all before it waits.)
    """

    def __init__(self, map_fd: int, max_entries: int, size: int, cpus: Iterable[int] | None,
                 wakeup_events: int, watermark: int | None) -> None:
        check_cpu()
        self.rings: list[PerfRing] = []
        self._installed: list[int] = []
        self._map_fd = os.dup(map_fd)
        self.epoll = select.epoll()
        try:
            wanted = online_cpus() if cpus is None else sorted(set(cpus))
            count_lost = _supports_lost_format()
            for cpu in wanted:
                if cpu >= max_entries:
                    raise ValueError(
                        f"CPU {cpu} has no slot in a perf event array of {max_entries} entries"
                    )
                ring = PerfRing(cpu, size, wakeup_events, watermark, count_lost)
                self.rings.append(ring)
                _syscall.map_update(self._map_fd, cpu, ring.fd.to_bytes(4, "little"))
                self._installed.append(cpu)
                self.epoll.register(ring.fd, select.EPOLLIN)
                ring.enable()
        except BaseException:
            self.close()
            self.close_epoll()
            raise
        self.count_lost = count_lost

    def fileno(self) -> int:
        return self.epoll.fileno()

    def close(self) -> None:
        """Take the events out of the map, then unmap and close them (not the epoll fd).

        The map holds its own reference to each event until its entry is
        deleted (or every fd of the map is closed): closing our fds alone
        would leave the events, and their rings, alive in the kernel.
        """
        installed, self._installed = self._installed, []
        for cpu in installed:
            try:
                _syscall.map_delete(self._map_fd, cpu)
            except OSError:
                pass  # already gone
        rings, self.rings = self.rings, []
        for ring in rings:
            ring.close()  # also leaves our epoll set
        if self._map_fd >= 0:
            os.close(self._map_fd)
            self._map_fd = -1

    def close_epoll(self) -> None:
        """Close the waited-on fd: only once no event loop has it registered."""
        self.epoll.close()
