"""Pinned exec programs: they outlive their process, reopen, refuse other versions, go away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import anyio
import pytest
from pinning import bpftool_exists, cleanup, marked_exec, new_pin_dir, wait_gone

from aioringbuf import ExecEvent, _pin, _syscall
from aioringbuf._acked import AckedRing
from aioringbuf._exec import EXEC_OBJECT

pytestmark = pytest.mark.kernel

RING = 1 << 20
# Every program of exec.bpf.o gets a link (tracepoint, tp_btf, ...).
PROGRAMS = len(_pin.program_sections(str(EXEC_OBJECT)))

CREATE_AND_DIE = """
import json, os, sys
from aioringbuf import _pin
p = _pin.open_pinned(sys.argv[1], int(sys.argv[2]))
print(json.dumps({"created": p.created, "links": p.link_ids, "progs": p.prog_ids,
                  "maps": p.map_ids}), flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.fixture
def pin_dir(kernel, bpffs):
    path = new_pin_dir()
    yield path
    cleanup(path)


def _find(ring_fd: int, drops_fd: int, mark: str) -> list[ExecEvent]:
    async def main():
        async with AckedRing(ring_fd, ExecEvent, drop_counter_fd=drops_fd) as ring:
            found = []
            with anyio.move_on_after(5):
                while not found:
                    found = [r.event for r in await ring.batch() if mark in r.event.argv]
            return found
    return anyio.run(main)


def test_pinned_programs_outlive_their_process_and_keep_writing(pin_dir):
    out = subprocess.run([sys.executable, "-c", CREATE_AND_DIE, pin_dir, str(RING)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, out.stderr
    made = json.loads(out.stdout)
    assert made["created"] and len(made["links"]) == PROGRAMS
    assert all(bpftool_exists("link", i) for i in made["links"])
    mark = f"aiorb-pin-{uuid.uuid4().hex}"
    marked_exec(mark)  # nobody holds the programs but their pins
    p = _pin.open_pinned(pin_dir, RING)
    try:
        assert not p.created
        assert sorted(p.link_ids) == sorted(made["links"])
        assert p.map_ids == made["maps"]
        found = _find(p.ring_fd, p.drops_fd, mark)
        assert [ev.argv for ev in found] == [["/bin/true", mark]]
    finally:
        p.close()


def test_remove_leaves_no_pin_no_link_no_program(pin_dir):
    p = _pin.open_pinned(pin_dir, RING)
    links, progs, maps = list(p.link_ids), list(p.prog_ids), list(p.map_ids.values())
    p.close()
    removed = _pin.remove_pinned(pin_dir)
    assert len(removed) == PROGRAMS + 4 and not os.path.exists(pin_dir)  # + 3 maps, version
    assert wait_gone("link", links) == []
    assert wait_gone("prog", progs) == []
    assert wait_gone("map", maps) == []


def test_a_set_of_another_version_is_refused_with_what_to_do(pin_dir):
    _pin.open_pinned(pin_dir, RING).close()
    vfd = _syscall.obj_get(os.path.join(pin_dir, "version"))
    try:
        _syscall.map_update(vfd, 0, b"aioringbuf-pins-0".ljust(64, b"\0"))
    finally:
        os.close(vfd)
    with pytest.raises(_pin.PinError, match=r"another version.*--remove"):
        _pin.open_pinned(pin_dir, RING)
    assert sorted(os.listdir(pin_dir))  # refused, not touched


def test_an_interrupted_set_up_is_made_again(pin_dir):
    os.makedirs(pin_dir)
    fd = _syscall.map_create(_syscall.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="aiorb_stale")
    _syscall.obj_pin(fd, os.path.join(pin_dir, "events"))  # no version marker: unfinished
    os.close(fd)
    p = _pin.open_pinned(pin_dir, RING)
    try:
        assert p.created and _syscall.map_info(p.ring_fd).type == _syscall.BPF_MAP_TYPE_RINGBUF
    finally:
        p.close()


def test_a_directory_outside_bpffs_is_refused(tmp_path, kernel):
    with pytest.raises(_pin.PinError, match="not on a bpffs mount"):
        _pin.open_pinned(str(tmp_path / "pins"), RING)
