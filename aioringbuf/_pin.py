"""The exec programs attached through links pinned in bpffs, with their ring.

Links pinned in bpffs keep programs attached after the process that made
them exits, and a pinned ring map keeps its records and its
``consumer_pos``. That is what lets a restarted agent (``aioringbuf ship``)
carry on at the first record it had not acknowledged. One directory holds
one set::

    <dir>/events            the ring (BPF_MAP_TYPE_RINGBUF)
    <dir>/events_drops      its per-CPU drop counter
    <dir>/exec_enter_drops  attempts lost at syscall entry
    <dir>/link_<program>    one link per program (perf link, or raw tracepoint link)
    <dir>/version           pinned last: a marker of the object that made the set

pylibbpf attaches through libbpf links that are disabled when they are
destroyed, and hands out no link fds, so the programs are attached here
with bpf(2) ourselves: ``perf_event_open`` on the tracepoint, then
``BPF_LINK_CREATE`` with ``BPF_PERF_EVENT``. A set made by another build of
exec.bpf.o (the marker holds its SHA-256) is refused, not mixed with.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import struct
from dataclasses import dataclass, field

from . import _syscall
from ._errors import AioRingBufError, BpfObjectError, NotPrivilegedError
from ._exec import EXEC_OBJECT
from ._loader import load
from ._perfmap import PERF_EVENT_IOC_ENABLE, PERF_FLAG_FD_CLOEXEC, _PerfEventAttr

DEFAULT_PIN_ROOT = "/sys/fs/bpf/aioringbuf"
TRACEFS = "/sys/kernel/tracing"
PIN_FORMAT = b"aioringbuf-pins-1"  # bump when the layout of a set changes
MARKER_SIZE = 64

BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_PERF_EVENT = 41
_SYS_PERF_EVENT_OPEN = 298  # x86-64
PERF_TYPE_TRACEPOINT = 2
BPFFS_MAGIC = 0xCAFE4A11

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]

MAPS = ("events", "events_drops", "exec_enter_drops")


class PinError(AioRingBufError, OSError):
    """Pinned objects that cannot be used: another version, not bpffs, incomplete."""


class _LinkCreate(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("bpf_cookie", ctypes.c_uint64),
        ("_pad", ctypes.c_uint8 * 104),
    ]


class _LinkInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_rest", ctypes.c_uint8 * 116),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
        ("_pad", ctypes.c_uint8 * 112),
    ]


def link_info(fd: int) -> tuple[int, int]:
    """(link id, program id) of a link fd."""
    info = _LinkInfo()
    attr = _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info))
    _syscall.bpf(_syscall.BPF_OBJ_GET_INFO_BY_FD, attr, f"reading link info of fd {fd}")
    return info.id, info.prog_id


def program_sections(path: str) -> dict[str, str]:
    """Program name -> ELF section name, from the object's symbol table."""
    with open(path, "rb") as f:
        d = f.read()
    shoff, = struct.unpack_from("<Q", d, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize) for i in range(shnum)]

    def cstr(off: int) -> str:
        return d[off: d.index(b"\0", off)].decode()

    names = [cstr(hdrs[shstrndx][4] + h[0]) for h in hdrs]
    progs: dict[str, str] = {}
    for h in hdrs:
        if h[1] != 2:  # SHT_SYMTAB
            continue
        strtab = hdrs[h[6]][4]
        for off in range(h[4], h[4] + h[5], 24):
            st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", d, off)
            if st_info & 0xF == 2 and st_info >> 4 == 1 and 0 < st_shndx < shnum:  # global func
                progs[cstr(strtab + st_name)] = names[st_shndx]
    return progs


def tracepoint_id(section: str) -> int:
    """The tracefs id of ``tracepoint/<category>/<name>`` (or ``tp/...``)."""
    kind, _, rest = section.partition("/")
    if kind not in ("tracepoint", "tp") or rest.count("/") != 1:
        raise BpfObjectError(f"program section {section!r} is not a tracepoint: cannot pin it")
    try:
        with open(f"{TRACEFS}/events/{rest}/id") as f:
            return int(f.read())
    except FileNotFoundError:
        raise BpfObjectError(
            f"tracepoint {rest} not found under {TRACEFS}/events (is tracefs mounted?)"
        ) from None


class _RawTpOpen(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_uint64),
        ("prog_fd", ctypes.c_uint32),
        ("_pad0", ctypes.c_uint32),
        ("cookie", ctypes.c_uint64),
        ("_pad", ctypes.c_uint8 * 104),
    ]


def attach_program(prog_fd: int, section: str) -> int:
    """Attach a program by its section name through a pinnable link; return the link fd.

    ``tracepoint/`` (or ``tp/``): a perf link on the tracepoint's perf event;
    ``tp_btf/``: BPF_RAW_TRACEPOINT_OPEN without a name (the target is in the
    program's BTF); ``raw_tp/`` (or ``raw_tracepoint/``): the same, by name.
    """
    kind, _, rest = section.partition("/")
    if kind in ("tracepoint", "tp"):
        return attach_tracepoint(prog_fd, section)
    if kind in ("tp_btf", "raw_tp", "raw_tracepoint"):
        name = ctypes.create_string_buffer(rest.encode())
        attr = _RawTpOpen(0 if kind == "tp_btf" else ctypes.addressof(name), prog_fd)
        return _syscall.bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attaching {section}")
    raise BpfObjectError(f"program section {section!r}: aioringbuf can pin only tracepoint, "
                         "tp_btf and raw_tp programs")


def attach_tracepoint(prog_fd: int, section: str) -> int:
    """Attach a tracepoint program through a perf link; return the link fd."""
    attr = _PerfEventAttr()
    attr.type = PERF_TYPE_TRACEPOINT
    attr.size = ctypes.sizeof(attr)
    attr.config = tracepoint_id(section)
    attr.sample_period = 1
    attr.wakeup = 1
    pfd = _libc.syscall(_SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, 0, -1,
                        PERF_FLAG_FD_CLOEXEC)
    if pfd < 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES):
            raise NotPrivilegedError(f"opening tracepoint {section}", ("CAP_PERFMON",))
        raise OSError(err, f"perf_event_open on {section}: {os.strerror(err)}")
    try:
        attr2 = _LinkCreate(prog_fd, pfd, BPF_PERF_EVENT, 0, 0)
        link_fd = _syscall.bpf(BPF_LINK_CREATE, attr2, f"attaching {section} (BPF_LINK_CREATE)")
        _libc.ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)
    finally:
        os.close(pfd)  # the link holds the perf event now
    return link_fd


def object_marker(path: str | os.PathLike[str] = EXEC_OBJECT) -> bytes:
    """What the version map holds: the pin format and the object's SHA-256."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
    return PIN_FORMAT.ljust(32, b"\0") + digest


def _is_bpffs(path: str) -> bool:
    class _StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_uint8 * 112)]

    buf = _StatFs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return False
    return bool(buf.f_type & 0xFFFFFFFF == BPFFS_MAGIC)


@dataclass
class PinnedExec:
    """Open fds of one pinned set; closing them leaves the pins (and programs) in place."""

    path: str
    ring_fd: int
    drops_fd: int
    enter_drops_fd: int
    created: bool  # True when this call made the set, False when it reopened one
    link_ids: list[int] = field(default_factory=list)
    prog_ids: list[int] = field(default_factory=list)
    map_ids: dict[str, int] = field(default_factory=dict)

    @property
    def ring_size(self) -> int:
        return _syscall.map_info(self.ring_fd).max_entries

    def kernel_drops(self) -> int:
        """Records lost in the kernel, since the set was made (it persists across agents)."""
        return _syscall.percpu_u64_sum(self.drops_fd)

    def enter_drops(self) -> int:
        return _syscall.percpu_u64_sum(self.enter_drops_fd)

    def close(self) -> None:
        for name in ("ring_fd", "drops_fd", "enter_drops_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def lock_consumer(path: str) -> int:
    """Take the one-consumer lock of the set at ``path``; returns the fd that holds it.

    A ring has one consumer: two agents acknowledging into one ring would
    hand back each other's records. The lock is a flock on the pin
    directory itself, so the kernel drops it when the holder dies (SIGKILL
    included) and nothing is left behind.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PinError(f"another process is already consuming the ring pinned at {path} "
                       "(an `aioringbuf ship` running?): one ring has one consumer") from None
    return fd


def _entries(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _prepare_dir(path: str) -> None:
    parent = os.path.dirname(path.rstrip("/")) or "/"
    os.makedirs(path, exist_ok=True)
    if not _is_bpffs(path):
        raise PinError(f"{path} is not on a bpffs mount (mount -t bpf bpf {parent}?): "
                       "BPF objects can be pinned only there")


def open_pinned(path: str, ring_size: int) -> PinnedExec:
    """Reopen the set at ``path``, or make it (load, attach, pin) if there is none.

    Blocking (loading takes a while): call it from a worker thread in async code.
    Raises :class:`PinError` for a set made by another version of exec.bpf.o.
    """
    _prepare_dir(path)
    if "version" not in _entries(path):
        # No marker: nothing, or a set-up that was interrupted before it
        # finished (the marker is pinned last). Start again from nothing.
        remove_pinned(path, keep_dir=True)
        _create(path, ring_size)
        pinned = _reopen(path)
        pinned.created = True
        return pinned
    return _reopen(path)


def _reopen(path: str) -> PinnedExec:
    vfd = _syscall.obj_get(os.path.join(path, "version"))
    try:
        marker = _syscall.map_lookup(vfd, 0, MARKER_SIZE)[:MARKER_SIZE]
    finally:
        os.close(vfd)
    want = object_marker().ljust(MARKER_SIZE, b"\0")
    if marker != want:
        fmt = marker[:32].rstrip(b"\0").decode(errors="replace") or "unknown"
        raise PinError(
            f"the BPF objects pinned at {path} were made by another version of aioringbuf "
            f"({fmt}, exec.bpf.o {marker[32:40].hex()}..., this one has "
            f"{want[32:40].hex()}...); ship its events with that version, or remove them "
            f"with `aioringbuf ship --remove --pin-dir {path}` (records still in that ring "
            "are lost)"
        )
    fds: dict[str, int] = {}
    try:
        for name in MAPS:
            fds[name] = _syscall.obj_get(os.path.join(path, name))
        pinned = PinnedExec(path, fds["events"], fds["events_drops"],
                            fds["exec_enter_drops"], created=False)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    for name in MAPS:
        pinned.map_ids[name] = _syscall.map_info(fds[name]).id
    for entry in _entries(path):
        if entry.startswith("link_"):
            fd = _syscall.obj_get(os.path.join(path, entry))
            try:
                link_id, prog_id = link_info(fd)
            finally:
                os.close(fd)
            pinned.link_ids.append(link_id)
            pinned.prog_ids.append(prog_id)
    return pinned


def _create(path: str, ring_size: int) -> None:
    sections = program_sections(str(EXEC_OBJECT))
    with load(EXEC_OBJECT, attach=False, map_sizes={"events": ring_size}) as obj:
        for name in MAPS:
            _syscall.obj_pin(obj.map_fd(name), os.path.join(path, name))
        for prog in obj.program_names:
            prog_fd = obj.program_fd(prog)
            try:
                link_fd = attach_program(prog_fd, sections[prog])
            finally:
                os.close(prog_fd)
            try:
                _syscall.obj_pin(link_fd, os.path.join(path, f"link_{prog}"))
            finally:
                os.close(link_fd)
    vfd = _syscall.map_create(_syscall.BPF_MAP_TYPE_ARRAY, 4, MARKER_SIZE, 1,
                              name="aiorb_version")
    try:
        _syscall.map_update(vfd, 0, object_marker().ljust(MARKER_SIZE, b"\0"))
        _syscall.obj_pin(vfd, os.path.join(path, "version"))
    finally:
        os.close(vfd)


def remove_pinned(path: str, keep_dir: bool = False) -> list[str]:
    """Unpin everything at ``path``: links detach once no process holds them.

    Returns the names removed. Only names a set can contain are touched, so
    a wrong ``path`` cannot delete someone else's pins.
    """
    removed = []
    for entry in _entries(path):
        if entry in (*MAPS, "version") or entry.startswith("link_"):
            os.unlink(os.path.join(path, entry))
            removed.append(entry)
    if not keep_dir:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
    return removed
