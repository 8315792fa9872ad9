"""Least privilege: what the library needs, and errors that name what is missing.

Measured on this kernel: loading a tracepoint program needs CAP_BPF and
CAP_PERFMON; attaching it also needs read access to tracefs
(/sys/kernel/tracing is root-only: CAP_DAC_READ_SEARCH, or mount tracefs
with a gid/mode). Nothing else: no CAP_SYS_ADMIN, no root uid.
"""

from __future__ import annotations

import pytest
from privileges import run_with_caps

STREAM_ONE_EVENT = """
import os, anyio, aioringbuf
from aioringbuf import _syscall

async def main():
    try:
        async with aioringbuf.load("getpgid.bpf.o") as obj:
            _syscall.map_update(obj.map_fd("control"), 0, os.getpid().to_bytes(8, "little"))
            async with obj.ring_buffer("events") as rb:
                os.getpgid(0)
                with anyio.fail_after(5):
                    rec = await rb.receive()
                print("OK", int.from_bytes(rec[:8], "little"), rb.stats().delivered)
    except aioringbuf.NotPrivilegedError as e:
        print("NotPrivilegedError", e)

anyio.run(main)
"""

LEAST = ("bpf", "perfmon", "dac_read_search")


def test_cap_bpf_perfmon_and_tracefs_access_are_enough(bpf_objects) -> None:
    proc = run_with_caps(STREAM_ONE_EVENT, LEAST, files=(str(bpf_objects / "getpgid.bpf.o"),))
    assert proc.stdout.strip() == "OK 0 1", proc.stdout + proc.stderr


@pytest.mark.parametrize("dropped", LEAST)
def test_each_missing_capability_is_named(bpf_objects, dropped: str) -> None:
    caps = tuple(c for c in LEAST if c != dropped)
    proc = run_with_caps(STREAM_ONE_EVENT, caps, files=(str(bpf_objects / "getpgid.bpf.o"),))
    assert proc.stdout.startswith("NotPrivilegedError"), proc.stdout + proc.stderr
    assert f"lacks CAP_{dropped.upper()}" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_no_capabilities_at_all(bpf_objects) -> None:
    proc = run_with_caps(STREAM_ONE_EVENT, (), files=(str(bpf_objects / "getpgid.bpf.o"),))
    assert proc.stdout.startswith("NotPrivilegedError"), proc.stdout + proc.stderr
    assert "lacks CAP_BPF and CAP_PERFMON" in proc.stdout
    assert "libbpf" not in proc.stderr  # refused before libbpf's long story
