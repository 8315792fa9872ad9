"""Helpers for the pinning and shipping tests: pin directories, marked execs, id checks."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

from aioringbuf import _pin


def new_pin_dir() -> str:
    """A directory of its own for one test (never the default one)."""
    return f"/sys/fs/bpf/aiorb-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def marked_exec(mark: str) -> None:
    """One exec that the tests can find: /bin/true with ``mark`` as its argument."""
    subprocess.run(["/bin/true", mark], check=True)


def bpftool_exists(kind: str, obj_id: int) -> bool:
    """Whether the kernel still has link/prog/map ``obj_id`` (asked by id, not by name)."""
    r = subprocess.run(["bpftool", kind, "show", "id", str(obj_id)],
                       capture_output=True, text=True)
    return r.returncode == 0


def wait_gone(kind: str, ids: list[int], timeout: float = 10.0) -> list[int]:
    """Ids still there after ``timeout`` (links and programs are freed asynchronously)."""
    deadline = time.monotonic() + timeout
    left = list(ids)
    while left and time.monotonic() < deadline:
        left = [i for i in left if bpftool_exists(kind, i)]
        if left:
            time.sleep(0.1)
    return left


def cleanup(path: str) -> None:
    if os.path.isdir(path):
        _pin.remove_pinned(path)
