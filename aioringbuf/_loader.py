"""Loading BPF objects with pylibbpf: open, load, attach, find maps, release.

pylibbpf frees fds and links when its objects are garbage-collected; this
module makes that deterministic: it detaches every program it attached,
closes every stream it handed out and drops its last references on close.
"""

from __future__ import annotations

import os
import tempfile
from types import TracebackType
from typing import Any, TypeVar

import anyio
import pylibbpf

from . import _syscall
from ._elf import BpfElf
from ._errors import (
    BpfObjectError,
    KernelTooOldError,
    MapNotFoundError,
    NotPrivilegedError,
    TracefsError,
)
from ._perfbuf import PerfBuffer
from ._queued import QueuedStream
from ._ringbuf import RingBuffer

T = TypeVar("T")


def check_privileges() -> None:
    """Raise NotPrivilegedError unless this process may use bpf(2).

    Creating a one-element array map is the cheapest operation the kernel
    checks like a program load; doing it first turns libbpf's long EPERM
    story into one clear error.
    """
    try:
        fd = _syscall.map_create(_syscall.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="aiorb_probe")
    except NotPrivilegedError:
        raise NotPrivilegedError("using BPF (creating a map)") from None
    os.close(fd)
    try:
        fd = _syscall.map_create(_syscall.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, name="aiorb_probe")
    except OSError as exc:
        if isinstance(exc, NotPrivilegedError):
            raise
        raise KernelTooOldError(
            "this kernel cannot create BPF ring buffers (BPF_MAP_TYPE_RINGBUF needs Linux >= 5.8)"
        ) from None
    os.close(fd)


TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")  # where libbpf looks


def check_tracefs(tracepoints: list[tuple[str, str]]) -> None:
    """Raise NotPrivilegedError unless this process can read the tracepoints' ids
    (TracefsError if tracefs is not mounted, or lacks one of them).

    libbpf reads ``events/CATEGORY/EVENT/id`` under tracefs to attach a
    tracepoint program; tracefs is root-only by default, so CAP_BPF and
    CAP_PERFMON pass check_privileges() and the attach fails later, with
    libbpf's lines on stderr. Checked before loading, it is one clear error.
    """
    for category, event in tracepoints:
        denied = None
        for root in TRACEFS:
            path = os.path.join(root, "events", category, event, "id")
            try:
                with open(path, "rb"):
                    break
            except PermissionError:
                denied = denied or path
            except OSError:
                continue  # not mounted there: libbpf tries the next place, so do we
        else:
            if denied is not None:
                raise NotPrivilegedError(
                    f"reading {denied} (to attach the tracepoint {category}/{event})",
                    ("CAP_DAC_READ_SEARCH",),
                )
            raise _missing_tracepoint(category, event)


def _missing_tracepoint(category: str, event: str) -> TracefsError:
    """No tracefs at all (say how to mount it), or one without this event."""
    mounted = [root for root in TRACEFS if os.path.isdir(os.path.join(root, "events"))]
    if not mounted:
        return TracefsError(
            f"tracefs is not mounted (neither {' nor '.join(TRACEFS)} has events/), so the "
            f"tracepoint {category}/{event} cannot be attached; mount it, as root: "
            "mount -t tracefs nodev /sys/kernel/tracing")
    return TracefsError(
        f"this kernel has no tracepoint {category}/{event} (no "
        f"{os.path.join(mounted[0], 'events', category, event)}); it may lack the option "
        "that provides it (syscall tracepoints: CONFIG_FTRACE_SYSCALLS)")


class BpfObject:
    """A BPF object file, loaded and (by default) attached; see :func:`load`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        attach: bool = True,
        map_sizes: dict[str, int] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._attach = attach
        self._map_sizes = dict(map_sizes or {})
        self._obj: Any = None
        self._attached: list[Any] = []
        self._streams: list[Any] = []  # what ring_buffer()/perf_buffer() handed out
        self._closed = False

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> BpfObject:
        """Load (and attach) synchronously; ``async with`` does this in a thread."""
        if self._obj is not None:
            return self
        if self._closed:
            raise anyio.ClosedResourceError
        elf = BpfElf.from_path(self.path)
        elf.check_ring_sizes(skip=self._map_sizes)
        check_privileges()
        if self._attach:
            check_tracefs(elf.tracepoints())
        elf.set_max_entries(self._map_sizes)
        with tempfile.TemporaryDirectory(prefix="aioringbuf-") as tmp:
            load_path = self.path
            if self._map_sizes:
                # libbpf names global-data maps after the file: keep its name.
                load_path = os.path.join(tmp, os.path.basename(self.path))
                with open(load_path, "wb") as f:
                    f.write(elf.data)
            obj = pylibbpf.BpfObject(load_path)
            try:
                obj.load()
            except pylibbpf.BpfException as exc:
                raise self._load_error(exc) from None
        self._obj = obj
        if self._attach:
            try:
                for name in obj.get_program_names():
                    prog = obj.get_program(name)
                    prog.attach()
                    self._attached.append(prog)
            except pylibbpf.BpfException as exc:
                self.close()
                if "Permission denied" in str(exc) or "not permitted" in str(exc):
                    raise NotPrivilegedError(
                        f"attaching program {name!r} of {self.path}",
                        ("CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"),
                    ) from None
                raise BpfObjectError(
                    f"attaching program {name!r} of {self.path} failed: {exc}; programs that "
                    "cannot auto-attach (xdp, tc, ...) need load(..., attach=False)"
                ) from None
        return self

    def _load_error(self, exc: Exception) -> Exception:
        text = str(exc)
        if "Operation not permitted" in text or "Permission denied" in text:
            return NotPrivilegedError(f"loading {self.path}")
        return BpfObjectError(f"loading {self.path} failed: {text} (libbpf's log above says why)")

    def detach(self) -> None:
        """Detach its programs, keeping maps and streams: no new records come,
        and what the rings hold can still be read. Idempotent."""
        attached, self._attached = self._attached, []
        for prog in attached:
            try:
                prog.detach()
            except pylibbpf.BpfException:
                pass  # already detached

    def close(self) -> None:
        """Close its streams, detach its programs, free its maps. Idempotent."""
        if self._closed:
            return
        self._closed = True
        streams, self._streams = self._streams, []
        for s in streams:
            s.close()
        self.detach()
        self._obj = None  # the last reference: pylibbpf closes its fds now

    async def __aenter__(self) -> BpfObject:
        try:
            await anyio.to_thread.run_sync(self.open)
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __enter__(self) -> BpfObject:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- maps and programs ----------------------------------------------------

    def _loaded(self) -> Any:
        if self._obj is None:
            if self._closed:
                raise anyio.ClosedResourceError
            raise RuntimeError("the object is not loaded yet: use `async with load(...)`")
        return self._obj

    @property
    def map_names(self) -> list[str]:
        return list(self._loaded().get_map_names())

    @property
    def program_names(self) -> list[str]:
        return list(self._loaded().get_program_names())

    def map_fd(self, name: str) -> int:
        """The fd of map ``name`` (owned by this object: do not close it)."""
        obj = self._loaded()
        if name not in obj.get_map_names():
            known = ", ".join(obj.get_map_names()) or "none"
            raise MapNotFoundError(f"no map {name!r} in {self.path}; its maps are: {known}")
        return int(obj[name].get_fd())

    def program_fd(self, name: str) -> int:
        """A new fd of program ``name`` (yours to close), e.g. for BPF_PROG_TEST_RUN."""
        obj = self._loaded()
        if name not in obj.get_program_names():
            known = ", ".join(obj.get_program_names()) or "none"
            raise LookupError(f"no program {name!r} in {self.path}; its programs are: {known}")
        map_ids = {_syscall.map_info(self.map_fd(m)).id for m in obj.get_map_names()}
        for map_id in map_ids:
            try:
                return _syscall.find_prog_fd(name, map_id)
            except LookupError:
                continue
        raise LookupError(f"program {name!r} of {self.path} has no fd in this process")

    def ring_buffer(
        self, name: str, event_type: type[T] | None = None, **options: Any
    ) -> RingBuffer[T] | QueuedStream[T]:
        """A :class:`RingBuffer` over map ``name``, with its ``<name>_drops`` counter.

        Options are RingBuffer's. The stream is closed with this object at
        the latest.
        """
        return self._stream(RingBuffer, name, event_type, options)

    def perf_buffer(
        self, name: str, event_type: type[T] | None = None, **options: Any
    ) -> PerfBuffer[T] | QueuedStream[T]:
        """A :class:`PerfBuffer` over perf event array ``name``, with its ``<name>_drops``.

        Options are PerfBuffer's (``per_cpu_size``, ``wakeup_events``,
        ``watermark``, ``cpus``, and every stream option). The stream is
        closed with this object at the latest.
        """
        return self._stream(PerfBuffer, name, event_type, options)

    def _stream(self, cls: Any, name: str, event_type: Any, options: dict[str, Any]) -> Any:
        fd = self.map_fd(name)  # the stream's map layer checks what it is
        if "drop_counter_fd" not in options and f"{name}_drops" in self.map_names:
            options["drop_counter_fd"] = self.map_fd(f"{name}_drops")
        if cls is RingBuffer and f"{name}_wakeup" in self.map_names:
            options.setdefault("adaptive_wakeups", True)  # AIORINGBUF_RINGBUF_ADAPTIVE
        stream = cls(fd, event_type, **options)
        self._streams.append(stream)
        return stream

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("loaded" if self._obj is not None else "not loaded")
        return f"<BpfObject {self.path!r} ({state})>"


def load(
    path: str | os.PathLike[str],
    *,
    attach: bool = True,
    map_sizes: dict[str, int] | None = None,
) -> BpfObject:
    """Load a BPF object file; use it as ``async with load(path) as obj``.

    ``attach=False`` loads without attaching (for programs run with
    BPF_PROG_TEST_RUN, or attached by hand). ``map_sizes`` resizes maps
    before loading, e.g. ``{"events": 1 << 22}``; ring buffer sizes are
    checked first (power of two, multiple of the page size).
    """
    return BpfObject(path, attach=attach, map_sizes=map_sizes)
