"""exec_events(): every execve()/execveat() on the machine, as ``async for``.

A source (docs/architecture.md, "Layers"): a raw stream over the packaged
program ``_bpf/exec.bpf.o`` (built from bpf/exec.bpf.c), which writes one
variable-length record per exec attempt (header, file name, argv): a
successful exec from ``sched_process_exec``, where the kernel's own copy of
the file name and argv can be trusted, a failed one when its syscall
returns; with ``exits=True``, one record per process exit too::

    async for ev in exec_events():
        print(ev.pid, ev.ppid, ev.ret, ev.filename, ev.argv)

Records are decoded by :meth:`ExecEvent.__aioringbuf_decoder__`, a
hand-written decoder (the codec's ``Tail`` handles one variable part; these
records have two).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import struct
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import msgspec

from . import _syscall
from ._cgroup import CgroupPaths, cgroup_of
from ._codec import S32, U32, U64, CStr, Event, compiled_decoder
from ._errors import DecodeError, RecordSizeError
from ._kerneltext import kernel_text
from ._loader import BpfObject, load
from ._options import StreamOptions
from ._pattern import Pattern
from ._queued import QueuedStream, make_stream
from ._ringmap import check_ring_size
from ._rodata import set_rodata
from ._source import Source, open_ring
from ._stats import StreamStats
from ._stream import RawStream
from ._union import tagged

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import StreamKwargs

EXEC_OBJECT = pathlib.Path(__file__).resolve().parent / "_bpf" / "exec.bpf.o"
DEFAULT_RING_SIZE = 8 << 20  # as declared in exec.bpf.c
AT_FDCWD = -100

# struct exec_event in bpf/exec.bpf.c, little-endian, no padding (120 bytes).
_HEADER = struct.Struct("<IIQQQIIIIIIIIIiiIIHH16s16s")
HEADER_SIZE = _HEADER.size
assert HEADER_SIZE == 120
KIND_EXEC = 1  # the records' leading tags
KIND_EXIT = 2
_EXIT_F_SINCE_EXEC = 1
_F_ARGS_TRUNCATED = 1
_F_FILENAME_TRUNCATED = 2
_F_EXECVEAT = 4
_F_COMPAT = 8
_F_DELETED = 16
_F_MEMFD = 32
_F_NO_ENTRY = 64
_LOGINUID_UNSET = 0xFFFFFFFF
_MINOR_BITS = 20  # the kernel's dev_t: major << 20 | minor

_cgroups = CgroupPaths()


def _realtime_offset_ns() -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC (bpf_ktime_get_ns's clock), now.

    Sampled between two monotonic reads and centred, so the error is at
    most half of one clock_gettime call. Taken once: later wall-clock steps
    (settimeofday, not NTP slewing, which moves both clocks) are not seen.
    """
    before = time.monotonic_ns()
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    after = time.monotonic_ns()
    return real - (before + after) // 2


_REALTIME_OFFSET_NS = _realtime_offset_ns()


def _text(raw: bytes) -> str:
    """Kernel bytes as str; see ExecEvent's note on text."""
    return kernel_text(raw)


class ExecEvent(Event):
    """One exec attempt: a successful exec, or a failed one with its errno.

    ``ret`` is 0 on success or ``-errno`` (e.g. ``-errno.ENOENT``).
    ``pid`` is the process (tgid) and ``tid`` the thread that called exec:
    they differ when a thread other than the main one exec'd (after a
    successful exec that thread *is* process ``pid``). ``comm`` is the new
    program's name when the exec succeeded, the caller's when it failed;
    ``pcomm`` is the parent's. ``uid``/``gid`` are the real ids,
    ``loginuid`` the audit login uid (None when unset). ``ts_ns`` is
    CLOCK_MONOTONIC when the kernel reported it (see :attr:`wall_time`).

    A successful exec is taken from the kernel's own copy once the new
    program is set up: ``filename`` as exec was given it (for
    ``execveat(fd, "", AT_EMPTY_PATH)``/``fexecve`` that is ``/dev/fd/N``,
    and ``memfd:NAME`` for a memfd, with ``memfd`` set), ``argv`` from the
    new program's own memory (at most 4096 bytes, NULs included; ``argc``
    is the full count), and the executed file's ``ino``/``dev`` (as
    ``os.stat`` gives them) and ``deleted`` flag. A failed attempt's
    ``filename``/``argv`` are read from the caller's memory (at most 128
    strings), and ``argc`` counts what was kept. ``args_truncated`` says
    when argv was cut.

    ``syscall``, ``dirfd`` (``AT_FDCWD`` = -100 for execve) and ``at_flags``
    come from the syscall's entry; ``entry_seen`` is False for an exec that
    was already under way when tracing started, whose values are then the
    defaults. ``compat`` marks a 32-bit syscall (``int $0x80``).

    ``cgroup`` is the cgroup v2 path (``""`` if the cgroup is already
    gone), ``container_id`` the docker/containerd/CRI-O/podman id found in
    it (None outside containers); ``mntns``/``pidns`` are namespace inode
    numbers, as in ``/proc/PID/ns/``.

    ``realtime_ns`` is ``ts_ns`` on CLOCK_REALTIME (nanoseconds since the
    Unix epoch), set when the record is decoded.

    Text (``comm``, ``pcomm``, ``filename``, ``argv``, ``cgroup``) is UTF-8
    decoded; each byte that is not UTF-8 is held as the code point
    U+10FF00 + byte (:func:`aioringbuf.exec.kernel_text`), so every event is
    valid Unicode: ``msgspec.json.encode(ev)`` always works and
    ``msgspec.json.decode(data, type=ExecEvent) == ev``.
    ``aioringbuf.exec.kernel_bytes(ev.filename)`` gives the kernel's exact bytes
    (``os.fsdecode`` of those, the ``surrogateescape`` form, for ``open``).
    """

    __aioringbuf_tag__: ClassVar[int] = KIND_EXEC

    ts_ns: int
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    comm: str
    cgroup_id: int
    filename: str
    argv: list[str]
    args_truncated: bool
    ret: int
    syscall: str = "execve"  # or "execveat"
    dirfd: int = AT_FDCWD
    at_flags: int = 0
    filename_truncated: bool = False  # longer than PATH_MAX: the exec failed
    argc: int = 0
    pcomm: str = ""
    loginuid: int | None = None
    mntns: int = 0
    pidns: int = 0
    cgroup: str = ""
    container_id: str | None = None
    ino: int = 0
    dev: int = 0
    deleted: bool = False
    memfd: bool = False
    compat: bool = False
    entry_seen: bool = True
    realtime_ns: int = 0

    @property
    def wall_time_ns(self) -> int:
        """``ts_ns`` as nanoseconds since the Unix epoch (CLOCK_REALTIME)."""
        return self.realtime_ns or self.ts_ns + _REALTIME_OFFSET_NS

    @property
    def wall_time(self) -> datetime.datetime:
        """``ts_ns`` as an aware UTC datetime (``.astimezone()`` for local time)."""
        ns = self.wall_time_ns
        return datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.timezone.utc).replace(
            microsecond=ns % 1_000_000_000 // 1000
        )

    @classmethod
    def __aioringbuf_decoder__(cls) -> Callable[[Any, int, int], ExecEvent]:
        """The codec's hook: a decoder ``(buffer, offset, length) -> ExecEvent``."""
        return _decode


def _decode(buf: Any, off: int, n: int) -> ExecEvent:
    """Decode one record: the fixed header in one unpack, then two strings."""
    if n < HEADER_SIZE:
        raise RecordSizeError(
            f"{n}-byte record is shorter than struct exec_event ({HEADER_SIZE} bytes)"
        )
    (kind, flags, ts_ns, cgroup_id, ino, dev, mntns, pidns, pid, tid, ppid, uid, gid, loginuid,
     ret, dirfd, at_flags, argc, fn_len, args_len, comm, pcomm) = _HEADER.unpack_from(buf, off)
    if kind != KIND_EXEC:
        raise DecodeError(f"record kind {kind} is not an exec record ({KIND_EXEC})")
    if n != HEADER_SIZE + fn_len + args_len:
        raise RecordSizeError(
            f"{n}-byte record, but its header announces {HEADER_SIZE} + {fn_len} + {args_len} "
            "bytes; is exec.bpf.o from the same aioringbuf version?"
        )
    rest = bytes(buf[off + HEADER_SIZE : off + n])  # the one copy out of the ring
    # One decode for all of argv, then split: NUL is never part of a UTF-8
    # sequence, so this equals decoding each string (and is several times faster).
    argv = kernel_text(rest[fn_len:]).split("\0")
    if argv[-1]:
        raise DecodeError(f"the {args_len}-byte argv area does not end with a NUL")
    del argv[-1]
    if ret < 0 and len(argv) != argc:
        raise DecodeError(f"the {args_len}-byte argv area does not hold {argc} strings")
    cgroup, container = _cgroups.lookup(cgroup_id)
    if not cgroup.isascii():  # a file name: surrogateescape'd by os.readlink
        cgroup = kernel_text(os.fsencode(cgroup))
    return ExecEvent(
        ts_ns,
        pid,
        tid,
        ppid,
        uid,
        gid,
        _text(comm.partition(b"\0")[0]),
        cgroup_id,
        _text(rest[:fn_len].partition(b"\0")[0]),
        argv,
        bool(flags & _F_ARGS_TRUNCATED) or len(argv) < argc,
        ret,
        "execveat" if flags & _F_EXECVEAT else "execve",
        dirfd,
        at_flags,
        bool(flags & _F_FILENAME_TRUNCATED),
        argc,
        _text(pcomm.partition(b"\0")[0]),
        None if loginuid == _LOGINUID_UNSET else loginuid,
        mntns,
        pidns,
        cgroup,
        container,
        ino,
        os.makedev(dev >> _MINOR_BITS, dev & ((1 << _MINOR_BITS) - 1)) if dev else 0,
        bool(flags & _F_DELETED),
        bool(flags & _F_MEMFD),
        bool(flags & _F_COMPAT),
        not flags & _F_NO_ENTRY,
        ts_ns + _REALTIME_OFFSET_NS,
    )


class ExitEvent(Event):
    """A process's end (its thread-group leader's exit), from sched_process_exit.

    ``exit_code`` is the status it gave ``exit()`` (0..255) and ``signal``
    the signal that killed it (0 if none), as ``os.WEXITSTATUS`` and
    ``os.WTERMSIG`` would tell its parent. ``duration_ns`` runs from its last
    exec (``since_exec``), or from its start if no exec was seen (a forked
    child that never exec'd, or one exec'd before tracing started).
    ``comm`` is its name, ``uid`` its real uid, ``ts_ns`` CLOCK_MONOTONIC.

    ``comm`` is text as in :class:`ExecEvent` (bytes that are not UTF-8 as
    U+10FF00 + byte), so ``msgspec.json.encode(ev)`` always works and
    ``msgspec.json.decode(data, type=ExitEvent) == ev``.
    """

    __aioringbuf_tag__: ClassVar[int] = KIND_EXIT

    kind: U32
    flags: U32
    ts_ns: U64
    cgroup_id: U64
    duration_ns: U64
    pid: U32
    ppid: U32
    uid: U32
    exit_code: S32
    signal: U32
    comm: CStr[16]

    @property
    def since_exec(self) -> bool:
        return bool(self.flags & _EXIT_F_SINCE_EXEC)

    @property
    def wall_time_ns(self) -> int:
        """``ts_ns`` as nanoseconds since the Unix epoch (CLOCK_REALTIME)."""
        return self.ts_ns + _REALTIME_OFFSET_NS

    @classmethod
    def __aioringbuf_decoder__(cls) -> Callable[[Any, int, int], ExitEvent]:
        """The codec's hook: the compiled decoder (C or Python), then ``comm``
        as kernel text; ``CStr`` alone would keep odd bytes as surrogates."""
        decode = compiled_decoder(cls)

        def decode_exit(buf: Any, off: int, n: int) -> ExitEvent:
            ev: ExitEvent = decode(buf, off, n)
            if not ev.comm.isascii():  # exact bytes back from surrogateescape, then re-read
                ev.comm = kernel_text(ev.comm.encode("utf-8", "surrogateescape"))
            return ev

        return decode_exit


_EXEC_OR_EXIT = tagged(ExecEvent, ExitEvent)


@dataclass(frozen=True)
class ExecFilter:
    """Which exec events to keep; an empty filter keeps everything.

    ``name`` is searched in the command name, the last part of the file
    name and argv[0]; ``line`` in the whole argv, joined by spaces (as
    execsnoop's ``-l``). ``failed`` is three-state: True keeps only failed
    attempts, False only successful execs, None both. Make patterns with
    :class:`aioringbuf.Pattern` (RE2: time linear in the text, whatever the
    pattern) when the pattern comes from someone else; a ``re.Pattern``
    works too, but backtracks. Shared by ``aioringbuf exec`` and the web
    example.
    """

    pids: frozenset[int] = frozenset()
    ppids: frozenset[int] = frozenset()
    uids: frozenset[int] = frozenset()
    name: Pattern | re.Pattern[str] | None = None
    failed: bool | None = None  # True: only errors; False: only successes; None: both
    line: Pattern | re.Pattern[str] | None = None  # searched in " ".join(argv)

    def __call__(self, ev: ExecEvent) -> bool:
        if self.pids and ev.pid not in self.pids:
            return False
        if self.ppids and ev.ppid not in self.ppids:
            return False
        if self.uids and ev.uid not in self.uids:
            return False
        if self.failed is not None and (ev.ret < 0) != self.failed:
            return False
        if self.line is not None and not self.line.search(" ".join(ev.argv)):
            return False
        if self.name is None:
            return True
        search = self.name.search
        return bool(
            search(ev.comm)
            or search(ev.filename.rpartition("/")[2])
            or (ev.argv and search(ev.argv[0]))
        )


class ExecEvents(RawStream[Any]):
    """The raw stream :func:`exec_events` returns: a ring buffer stream that loads lazily.

    ``async with exec_events() as events:`` loads and attaches on entry and
    detaches on exit. A bare ``async for ev in exec_events():`` loads on the
    first event and releases everything when the loop is cancelled or
    raises; after a ``break`` it is released when the stream is garbage
    collected (at once in CPython), or call :meth:`aclose`. Once loaded it
    is a ring buffer stream like any other, on the same fast path.
    """

    _kind = "exec events"

    def __init__(self, ring_size: int, rodata: dict[str, bytes], event_type: type,
                 options: StreamOptions) -> None:
        self._setup(event_type, options)
        self.name = "exec events"
        self._ring_size = ring_size
        self._rodata = rodata
        self._obj: BpfObject | None = None
        self._loading = False
        self._final_enter_drops: int | None = None
        self._final_filtered: int | None = None
        self._final_written: int | None = None

    async def _open_source(self) -> Source:
        """Load and attach exec.bpf.o (in a worker thread) and open its ring."""
        self._check_open()
        if self._loading:
            raise anyio.BusyResourceError("loading exec events")
        self._loading = True
        try:
            obj = await self._load()
            try:
                self._check_open()  # aclose() from another task while we loaded
                drops = obj.map_fd("events_drops") if "events_drops" in obj.map_names else None
                source = open_ring(obj.map_fd("events"), self.event_type, drops)
            except BaseException:
                obj.close()
                raise
        except BaseException:
            self.close()  # a failed or cancelled load leaves nothing behind
            raise
        finally:
            self._loading = False
        self._obj = obj
        self._attach(source)
        return source

    async def _load(self) -> BpfObject:
        with tempfile.TemporaryDirectory(prefix="aioringbuf-exec-") as tmp:
            path = EXEC_OBJECT
            if self._rodata:
                path = pathlib.Path(tmp, EXEC_OBJECT.name)  # libbpf names maps after it
                data = bytearray(EXEC_OBJECT.read_bytes())
                set_rodata(data, self._rodata, str(EXEC_OBJECT))
                path.write_bytes(data)
            obj = load(path, map_sizes={"events": self._ring_size})
            await obj.__aenter__()  # closes itself if loading fails or is cancelled
        return obj

    async def __aenter__(self) -> ExecEvents:
        if self._entered:
            raise RuntimeError("this exec_events() stream was already entered")
        return await super().__aenter__()

    def stop_producing(self) -> None:
        """Detach the programs: no new records; what the ring holds can still
        be read (until :meth:`caught_up`), and the rest is :meth:`unread`."""
        if self._obj is not None and self._final_written is None:
            self._obj.detach()  # returns once no program runs any more
            self._final_written = self._read_counter("events_written")
            self._final_enter_drops = self._read_counter("exec_enter_drops")
            self._final_filtered = self._read_counter("exec_filtered")

    def close(self) -> None:
        """Stop producing (detach), then close the stream. Idempotent.

        Records the ring still held are not lost from the count: they are
        :meth:`unread`.
        """
        if self._closed:
            return
        self.stop_producing()
        super().close()  # keeps the final stats()
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def written(self) -> int | None:
        """Records the kernel put into the ring (None before loading)."""
        if self._final_written is not None or self._obj is None:
            return self._final_written
        return self._read_counter("events_written")

    def unread(self) -> int | None:
        """Records the ring accepted that were neither delivered nor counted as
        dropped or bad: after close, what shutdown left behind. So that
        ``written() + kernel_drops == delivered + kernel_drops + queue_drops
        + decode_errors + discarded + unread()`` holds exactly."""
        written = self.written()
        if written is None or self._source is None:
            return None
        st = RawStream.stats(self)
        return written - (st.delivered + st.queue_drops + st.decode_errors + st.discarded)

    def caught_up(self) -> bool:
        """After :meth:`stop_producing`: has everything been delivered or counted?"""
        return self._final_written is not None and self.unread() == 0

    def stats(self) -> StreamStats:
        """The ring's counters (see :class:`aioringbuf.StreamStats`).

        ``kernel_drops`` counts every exec attempt whose record was lost,
        whatever the cause; :meth:`enter_drops` says how many of them were
        lost at syscall entry because too many execs were in flight.
        """
        if self._source is None:
            raise RuntimeError(
                "exec_events() has not loaded yet: stats exist after `async with` "
                "or the first event"
            )
        return msgspec.structs.replace(super().stats(), unread=self.unread())

    def enter_drops(self) -> int | None:
        """Attempts lost at entry (in-flight table full); None before loading."""
        if self._final_enter_drops is not None or self._obj is None:
            return self._final_enter_drops
        return self._read_counter("exec_enter_drops")

    def filtered(self) -> int | None:
        """Attempts that ``failed=`` kept out of the ring (they passed the uid
        and cgroup filters): asked for, so not drops. None before loading."""
        if self._final_filtered is not None or self._obj is None:
            return self._final_filtered
        return self._read_counter("exec_filtered")

    def _read_counter(self, name: str) -> int | None:
        assert self._obj is not None
        try:
            return _syscall.percpu_u64_sum(self._obj.map_fd(name))
        except (OSError, RuntimeError, LookupError, anyio.ClosedResourceError):
            return None  # not loaded (far enough) to have the map

    def __del__(self) -> None:
        # A bare `async for` left with `break` ends here: release the BPF
        # links now rather than whenever the loader's objects are collected.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception as exc:  # pragma: no cover - interpreter shutdown
                warnings.warn(f"closing exec_events() failed: {exc}", ResourceWarning,
                              stacklevel=1)

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        else:
            state = "open" if self._source is not None else "not loaded"
        return f"<ExecEvents ({state})>"


_FILTER_FAILED = {None: 0, True: 1, False: 2}  # exec.bpf.c's FILTER_ANY/FAILED/SUCCEEDED


def _filters(uid: int | None, cgroup: str | os.PathLike[str] | None,
             failed: bool | None) -> dict[str, bytes]:
    """exec.bpf.c's .rodata filter values for these options ({}: none)."""
    values = {}
    if uid is not None:
        if not 0 <= uid < _LOGINUID_UNSET:
            raise ValueError(f"uid must be in 0..{_LOGINUID_UNSET - 1}, not {uid}")
        values["filter_uid"] = struct.pack("<I", uid)
    if cgroup is not None:
        cgroup_id, level = cgroup_of(os.fspath(cgroup))  # FileNotFoundError says why
        values["filter_cgroup_id"] = struct.pack("<Q", cgroup_id)
        values["filter_cgroup_level"] = struct.pack("<I", level)
    if failed is not None:
        values["filter_failed"] = bytes([_FILTER_FAILED[bool(failed)]])
    return values


def exec_events(
    *,
    ring_size: int = DEFAULT_RING_SIZE,
    uid: int | None = None,
    cgroup: str | os.PathLike[str] | None = None,
    failed: bool | None = None,
    exits: bool = False,
    **options: Unpack[StreamKwargs],
) -> ExecEvents | QueuedStream[Any]:
    """Every exec attempt on this machine as an :class:`ExecEvent` stream.

    Needs root (or CAP_BPF + CAP_PERFMON and tracefs access). ``ring_size``
    is the kernel ring in bytes (a power of two; 8 MiB holds about 60,000
    typical records); the other options are :class:`aioringbuf.RingBuffer`'s
    (``overflow="drop_*"`` gives a queued stream, which needs ``async with``).

    ``uid`` (a real uid), ``cgroup`` (a cgroup v2 directory, or its path as
    /proc/PID/cgroup shows it: that cgroup and everything below it) and
    ``failed`` (True: only failed attempts; False: only successful execs;
    None, the default: both) filter in the kernel: what they leave out never
    enters the ring, and stats() counts only what matched (filtered records
    are not drops). :meth:`ExecEvents.filtered` counts the attempts that
    ``failed`` alone left out.
    ``exits=True`` also yields an :class:`ExitEvent` when a process ends
    (both kinds share the ring; ``failed`` does not apply to exits).
    Examples::

        async for ev in exec_events():
            print(ev.filename, ev.argv, ev.ret)

        async with exec_events(overflow="drop_oldest") as events:
            async for ev in events:
                ...
            print(events.stats())
    """
    # Fail at the call, not after loading programs into the kernel.
    check_ring_size(ring_size, "exec_events ring_size")
    opts = StreamOptions.of(dict(options))
    rodata = _filters(uid, cgroup, failed)
    if exits:
        rodata["want_exits"] = b"\1"
    event_type: type = _EXEC_OR_EXIT if exits else ExecEvent
    return make_stream(lambda o: ExecEvents(ring_size, rodata, event_type, o), opts)
