"""cgroup v2 directories of one test, and children that move into them.

Each test gets a fresh directory under a unique name below the cgroup v2
mount (never a fixed machine-wide name), removed depth first afterwards.
"""

from __future__ import annotations

import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from aioringbuf._cgroup import cgroup2_mount


@pytest.fixture
def cgroup_root(kernel) -> Iterator[pathlib.Path]:
    """A fresh cgroup v2 directory of this test; removed (depth first) after it."""
    mount = cgroup2_mount()
    assert mount, "cgroup v2 is not mounted"
    root = pathlib.Path(mount) / f"aiorb-test-{uuid.uuid4().hex[:12]}"
    root.mkdir()
    try:
        yield root
    finally:
        remove(root)


def remove(root: pathlib.Path, timeout: float = 10) -> None:
    """Kill whatever is left in ``root`` (cgroup.kill), then remove it depth first."""
    (root / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while "populated 1" in (root / "cgroup.events").read_text():
        assert time.monotonic() < deadline, f"{root} still has processes"
        time.sleep(0.01)
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        d.rmdir()
    root.rmdir()


def spawn_in(cgroup: pathlib.Path | None, argv: list[str], **kw) -> subprocess.Popen:
    """A child that moves itself into ``cgroup`` before its exec."""
    def enter() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text("0")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=enter, **kw)
