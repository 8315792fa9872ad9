"""The few bpf(2) commands pylibbpf does not expose, through ctypes.

pylibbpf loads and attaches objects; everything that works on a bare fd
(map info, pinning, per-CPU lookups, test runs) lives here, so the rest of
the package never builds a ``union bpf_attr`` itself.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
from dataclasses import dataclass

from ._errors import KernelTooOldError, NotPrivilegedError
from ._order import UnsupportedCPUError

# bpf(2) and perf_event_open(2) by platform.machine(): arm64 and RISC-V use
# the asm-generic table (include/uapi/asm-generic/unistd.h), x86-64 its own
# (arch/x86/entry/syscalls/syscall_64.tbl).
SYSCALL_NUMBERS = {
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
    "riscv64": {"bpf": 280, "perf_event_open": 241},
}


@functools.cache
def _sys_bpf() -> int:
    return syscall_number("bpf")


def syscall_number(name: str, machine: str | None = None) -> int:
    """The number of syscall ``name`` on this CPU (or on ``machine``)."""
    machine = machine or platform.machine()
    try:
        return SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise UnsupportedCPUError(
            f"aioringbuf does not know the {name}(2) syscall number on {machine or 'this CPU'}; "
            f"it knows {', '.join(SYSCALL_NUMBERS)}"
        ) from None

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_TEST_RUN = 10
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_RINGBUF = 27

MAP_TYPE_NAMES = {
    1: "hash",
    2: "array",
    4: "perf_event_array",
    5: "percpu_hash",
    6: "percpu_array",
    27: "ringbuf",
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Attr(ctypes.Union):
    """``union bpf_attr``: only the members used here, padded to 128 bytes."""

    class _MapElem(ctypes.Structure):
        _fields_ = [
            ("map_fd", ctypes.c_uint32),
            ("_pad", ctypes.c_uint32),
            ("key", ctypes.c_uint64),
            ("value", ctypes.c_uint64),
            ("flags", ctypes.c_uint64),
        ]

    class _MapCreate(ctypes.Structure):
        _fields_ = [
            ("map_type", ctypes.c_uint32),
            ("key_size", ctypes.c_uint32),
            ("value_size", ctypes.c_uint32),
            ("max_entries", ctypes.c_uint32),
            ("map_flags", ctypes.c_uint32),
            ("inner_map_fd", ctypes.c_uint32),
            ("numa_node", ctypes.c_uint32),
            ("map_name", ctypes.c_char * 16),
        ]

    class _Obj(ctypes.Structure):
        _fields_ = [
            ("pathname", ctypes.c_uint64),
            ("bpf_fd", ctypes.c_uint32),
            ("file_flags", ctypes.c_uint32),
        ]

    class _Info(ctypes.Structure):
        _fields_ = [
            ("bpf_fd", ctypes.c_uint32),
            ("info_len", ctypes.c_uint32),
            ("info", ctypes.c_uint64),
        ]

    class _TestRun(ctypes.Structure):
        _fields_ = [
            ("prog_fd", ctypes.c_uint32),
            ("retval", ctypes.c_uint32),
            ("data_size_in", ctypes.c_uint32),
            ("data_size_out", ctypes.c_uint32),
            ("data_in", ctypes.c_uint64),
            ("data_out", ctypes.c_uint64),
            ("repeat", ctypes.c_uint32),
            ("duration", ctypes.c_uint32),
        ]

    _fields_ = [
        ("elem", _MapElem),
        ("create", _MapCreate),
        ("obj", _Obj),
        ("info", _Info),
        ("test", _TestRun),
        ("_size", ctypes.c_uint8 * 128),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("_rest", ctypes.c_uint8 * 48),
    ]


class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),  # bit 0: gpl_compatible, from SEC("license")
        ("_rest", ctypes.c_uint8 * 120),
    ]


def bpf(cmd: int, attr: _Attr, what: str) -> int:
    """Run one bpf(2) command; raise a typed error that says ``what`` failed."""
    ret = _libc.syscall(_sys_bpf(), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES):
            raise NotPrivilegedError(what)
        if err == errno.ENOSYS:
            raise KernelTooOldError(f"{what}: this kernel has no bpf(2) system call")
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(ret)


@dataclass(frozen=True, slots=True)
class MapInfo:
    """What the kernel says about a map fd (BPF_OBJ_GET_INFO_BY_FD)."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str

    @property
    def type_name(self) -> str:
        return MAP_TYPE_NAMES.get(self.type, f"type {self.type}")


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    attr = _Attr()
    attr.info.bpf_fd = fd
    attr.info.info_len = ctypes.sizeof(info)
    attr.info.info = ctypes.addressof(info)
    try:
        bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"reading map info of fd {fd}")
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.EINVAL):
            raise ValueError(f"fd {fd} is not an open BPF map fd") from None
        raise
    return MapInfo(
        info.type,
        info.id,
        info.key_size,
        info.value_size,
        info.max_entries,
        info.map_flags,
        info.name.decode(errors="replace"),
    )


@dataclass(frozen=True, slots=True)
class ProgInfo:
    id: int
    name: str
    map_ids: tuple[int, ...]
    gpl_compatible: bool = False


def prog_info(fd: int) -> ProgInfo:
    ids = (ctypes.c_uint32 * 64)()
    info = _ProgInfo()
    info.nr_map_ids = len(ids)
    info.map_ids = ctypes.addressof(ids)
    attr = _Attr()
    attr.info.bpf_fd = fd
    attr.info.info_len = ctypes.sizeof(info)
    attr.info.info = ctypes.addressof(info)
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"reading program info of fd {fd}")
    n = min(info.nr_map_ids, len(ids))
    return ProgInfo(
        info.id, info.name.decode(errors="replace"), tuple(ids[:n]), bool(info.flags & 1)
    )


def find_prog_fd(name: str, map_id: int) -> int:
    """Return a dup of this process's fd of program ``name`` using map ``map_id``.

    pylibbpf does not hand out program fds; the program is still one of this
    process's open fds, recognised by its name and by a map it uses.
    """
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = prog_info(fd)
        except OSError:
            continue
        if info.name == name[:15] and map_id in info.map_ids:
            return os.dup(fd)
    raise LookupError(f"no loaded program {name!r} using map id {map_id}")


def obj_get(path: str) -> int:
    """Open a pinned BPF object (BPF_OBJ_GET) and return its new fd."""
    raw = os.fsencode(path)
    buf = ctypes.create_string_buffer(raw)
    attr = _Attr()
    attr.obj.pathname = ctypes.addressof(buf)
    return bpf(BPF_OBJ_GET, attr, f"opening pinned object {path}")


def obj_pin(fd: int, path: str) -> None:
    """Pin a BPF object fd at ``path`` on a bpffs mount (BPF_OBJ_PIN)."""
    buf = ctypes.create_string_buffer(os.fsencode(path))
    attr = _Attr()
    attr.obj.pathname = ctypes.addressof(buf)
    attr.obj.bpf_fd = fd
    bpf(BPF_OBJ_PIN, attr, f"pinning fd {fd} at {path}")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "") -> int:
    attr = _Attr()
    attr.create.map_type = map_type
    attr.create.key_size = key_size
    attr.create.value_size = value_size
    attr.create.max_entries = max_entries
    attr.create.map_flags = flags
    attr.create.map_name = name.encode()[:15]
    return bpf(BPF_MAP_CREATE, attr, f"creating a {MAP_TYPE_NAMES.get(map_type)} map")


def map_lookup(fd: int, key: int, value_size: int) -> bytes:
    """Look up u32 ``key``; ``value_size`` is the whole value (all CPUs for per-CPU maps)."""
    k = ctypes.c_uint32(key)
    v = ctypes.create_string_buffer(value_size)
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = ctypes.addressof(k)
    attr.elem.value = ctypes.addressof(v)
    bpf(BPF_MAP_LOOKUP_ELEM, attr, f"reading map fd {fd}")
    return v.raw


def map_update(fd: int, key: int, value: bytes) -> None:
    k = ctypes.c_uint32(key)
    v = ctypes.create_string_buffer(value, len(value))
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = ctypes.addressof(k)
    attr.elem.value = ctypes.addressof(v)
    bpf(BPF_MAP_UPDATE_ELEM, attr, f"updating map fd {fd}")


def map_delete(fd: int, key: int) -> None:
    """Delete u32 ``key`` (for perf event arrays: drops the map's reference to the event)."""
    k = ctypes.c_uint32(key)
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = ctypes.addressof(k)
    bpf(BPF_MAP_DELETE_ELEM, attr, f"deleting key {key} of map fd {fd}")


@functools.cache
def possible_cpus() -> int:
    """Number of possible CPUs: the stride count of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def percpu_u64_sum(fd: int, key: int = 0) -> int:
    """Sum of a per-CPU u64 counter over all possible CPUs."""
    ncpu = possible_cpus()
    raw = map_lookup(fd, key, 8 * ncpu)
    return sum(int.from_bytes(raw[i * 8 : i * 8 + 8], "little") for i in range(ncpu))


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> int:
    """Run a program ``repeat`` times on packet ``data`` (BPF_PROG_TEST_RUN).

    Blocks in the kernel for the whole run and releases the GIL meanwhile,
    so a worker thread can produce records while the event loop consumes.
    Returns the program's return value of the last run.
    """
    buf = ctypes.create_string_buffer(data, len(data))
    attr = _Attr()
    attr.test.prog_fd = prog_fd
    attr.test.data_size_in = len(data)
    attr.test.data_in = ctypes.addressof(buf)
    attr.test.repeat = repeat
    bpf(BPF_PROG_TEST_RUN, attr, f"test-running program fd {prog_fd}")
    return int(attr.test.retval)
