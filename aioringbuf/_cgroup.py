"""cgroup v2 ids to paths, and container ids out of those paths.

The kernel records only a cgroup's 64-bit id (the inode number of its
directory in cgroupfs). cgroupfs exports file handles of that id
(FILEID_KERNFS), so ``open_by_handle_at`` turns an id into the directory
without walking the tree; ``/proc/self/fd`` then names it. Ids are never
reused, so a bounded cache of answers (including "gone") stays correct.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections import OrderedDict

_FILEID_KERNFS = 0xFE
_O_PATH = 0o10000000
_CACHE_MAX = 4096

_libc = ctypes.CDLL(None, use_errno=True)


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_uint64)]


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (None: not mounted)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split(" ")[4].replace("\\040", " ")
    except OSError:
        pass
    return None


class CgroupPaths:
    """``lookup(cgroup_id)`` -> ("/system.slice/foo.service", container id or None).

    The path is "" if the cgroup is unknown or gone.
    """

    def __init__(self, mount: str | None = None, cache_max: int = _CACHE_MAX) -> None:
        self._mount = mount if mount is not None else cgroup2_mount()
        self._cache: OrderedDict[int, tuple[str, str | None]] = OrderedDict()
        self._cache_max = cache_max
        self._mount_fd: int | None = None

    def lookup(self, cgroup_id: int) -> tuple[str, str | None]:
        try:
            self._cache.move_to_end(cgroup_id)
            return self._cache[cgroup_id]
        except KeyError:
            pass
        path = self._resolve(cgroup_id)
        if path is None:
            return "", None  # no answer now (e.g. EPERM): do not remember it
        found = self._cache[cgroup_id] = (path, container_id(path))
        if len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)
        return found

    def _resolve(self, cgroup_id: int) -> str | None:
        if self._mount is None or cgroup_id == 0:
            return ""
        if self._mount_fd is None:
            try:
                self._mount_fd = os.open(self._mount, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                return None
        handle = _FileHandle(8, _FILEID_KERNFS, cgroup_id)
        fd = _libc.open_by_handle_at(self._mount_fd, ctypes.byref(handle), _O_PATH)
        if fd < 0:
            # ESTALE: the cgroup is gone; EPERM (needs CAP_DAC_READ_SEARCH)
            # and the like: no answer now, maybe later.
            return "" if ctypes.get_errno() in (errno.ESTALE, errno.ENOENT) else None
        try:
            full = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if full == self._mount:
            return "/"
        if full.startswith(self._mount + "/"):
            return full[len(self._mount):]
        return ""

    def close(self) -> None:
        if self._mount_fd is not None:
            os.close(self._mount_fd)
            self._mount_fd = None

    def __del__(self) -> None:
        fd = getattr(self, "_mount_fd", None)
        if fd is not None:
            os.close(fd)


def cgroup_of(path: str) -> tuple[int, int]:
    """(id, level) of a cgroup v2 directory, for the in-kernel filter.

    ``path`` is a directory under the cgroup2 mount, or a path as
    /proc/PID/cgroup shows it ("/system.slice/x.service").
    """
    mount = cgroup2_mount()
    if mount is None:
        raise FileNotFoundError("cgroup v2 is not mounted (no cgroup2 in /proc/self/mountinfo)")
    full = os.path.realpath(path)
    if not (full == mount or full.startswith(mount + "/")):
        full = os.path.realpath(os.path.join(mount, path.lstrip("/")))
    if not os.path.isdir(full) or not os.path.exists(os.path.join(full, "cgroup.procs")):
        raise FileNotFoundError(f"{path} is not a cgroup v2 directory (under {mount})")
    rel = full[len(mount):].strip("/")
    return os.stat(full).st_ino, (len(rel.split("/")) if rel else 0)


# The last path component that names a container, in each runtime's shape:
#   docker:      /docker/<id>                 system.slice/docker-<id>.scope
#   containerd:  /kubepods/.../<id>           cri-containerd-<id>.scope
#   CRI-O:       crio-<id>.scope              /kubepods/.../crio-<id>
#   podman:      libpod-<id>.scope            /libpod_parent/libpod-<id>
# (crio-conmon-<id> and libpod-conmon-<id> are the monitor, not the container.)
_CONTAINER = re.compile(
    r"^(?:docker-|cri-containerd-|containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$"
)


def container_id(cgroup_path: str) -> str | None:
    """The container id in a cgroup path, or None outside containers."""
    for part in reversed(cgroup_path.split("/")):
        m = _CONTAINER.match(part)
        if m:
            return m.group(1)
    return None
