"""Execs a caller tries to hide: untouched argv pages, memfds, deleted files, int $0x80.

The kernel side is what these test, so they run on one event loop. The C
helper (tests/exec_helper.c) is built with the machine's gcc, as a 64-bit
program; the 32-bit exec is its inline `int $0x80`.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from test_exec import TRUE, collect, marker, wait

from aioringbuf._exec import exec_events

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict]:
    """One event loop: what these test happens in the kernel."""
    return ("asyncio", {})

HELPER_SRC = pathlib.Path(__file__).with_name("exec_helper.c")


@pytest.fixture(scope="session")
def helper(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("helper") / "exec_helper"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out), str(HELPER_SRC)],
                   check=True, timeout=60)
    return str(out)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)


async def test_argv_in_untouched_pages_arrives_whole(kernel, anyio_backend, helper, tmp_path):
    """The name, argv and the argv array itself in a mapped file's pages that
    are neither in this process's page tables nor in the page cache."""
    mark = marker()
    link = tmp_path / "aiorb-hidden"
    link.symlink_to(TRUE)
    args = [str(link), mark, "second", "x" * 300]
    async with exec_events() as events:
        proc = subprocess.Popen([helper, "hidden", str(tmp_path / "data"), *args[:1], *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        # the second exec of that pid: the helper's own exec comes first
        (ev,) = await collect(events, lambda e: e.pid == proc.pid and e.argv[:1] != [helper], 1)
        assert await wait(proc) == 0
    assert proc.stdout is not None
    assert proc.stdout.read() == b"resident 0\n"  # really nowhere in memory before exec
    assert (ev.ret, ev.filename, ev.argv, ev.argc) == (0, str(link), args, 4)
    assert not ev.args_truncated and ev.comm == "aiorb-hidden"
    assert ev.ino == os.stat(TRUE).st_ino


async def test_memfd_exec_reports_the_memfd_name(kernel, anyio_backend) -> None:
    mark = marker()
    code = f"""
import os, shutil
fd = os.memfd_create({mark!r})
with open({TRUE!r}, "rb") as src:
    os.write(fd, src.read())
print(os.fstat(fd).st_ino, fd, flush=True)
os.execve(fd, ["true", {mark!r}], {{}})  # execveat(fd, "", ..., AT_EMPTY_PATH)
"""
    async with exec_events() as events:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE)
        (ev,) = await collect(events, lambda e: e.pid == proc.pid and e.argv[1:] == [mark], 1)
        assert await wait(proc) == 0
    assert proc.stdout is not None
    ino, fd = map(int, proc.stdout.read().split())
    assert ev.filename == f"memfd:{mark}"  # not /dev/fd/N
    assert ev.memfd and not ev.deleted and ev.ino == ino
    assert (ev.syscall, ev.dirfd, ev.at_flags) == ("execveat", fd, 0x1000)
    assert ev.argv == ["true", mark]


async def test_a_deleted_file_is_flagged(kernel, anyio_backend, tmp_path) -> None:
    mark = marker()
    copy = tmp_path / "aiorb-deleted"
    shutil.copy(TRUE, copy)
    copy.chmod(0o755)
    code = f"""
import os
fd = os.open({str(copy)!r}, os.O_RDONLY)
os.unlink({str(copy)!r})
print(os.fstat(fd).st_ino, os.fstat(fd).st_dev, fd, flush=True)
os.execve(fd, ["deleted", {mark!r}], {{}})
"""
    async with exec_events() as events:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE)
        (ev,) = await collect(events, lambda e: e.pid == proc.pid and e.argv[1:] == [mark], 1)
        assert await wait(proc) == 0
    assert proc.stdout is not None
    ino, dev, fd = map(int, proc.stdout.read().split())
    assert ev.deleted and not ev.memfd
    assert (ev.ino, ev.dev, ev.filename) == (ino, dev, f"/dev/fd/{fd}")
    assert not copy.exists()


async def test_32_bit_execs_succeeded_and_failed(kernel, anyio_backend, helper, tmp_path):
    mark = marker()
    missing = str(tmp_path / "no-such-program")
    async with exec_events() as events:
        ok = subprocess.Popen([helper, "compat", TRUE, "true", mark], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE)
        bad = subprocess.Popen([helper, "compat", missing, "missing", mark, "two"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        got = {e.pid: e for e in await collect(
            events, lambda e: e.argv[:2] in (["true", mark], ["missing", mark]), 2)}
        assert await wait(ok) == 0 and await wait(bad) == 0
    assert bad.stdout is not None and bad.stdout.read() == f"{-errno.ENOENT}\n".encode()
    ev = got[ok.pid]
    assert (ev.ret, ev.compat, ev.filename, ev.argv, ev.comm) == (0, True, TRUE,
                                                                  ["true", mark], "true")
    assert ev.entry_seen and ev.syscall == "execve" and ev.dirfd == -100
    ev = got[bad.pid]
    assert (ev.ret, ev.compat, ev.filename, ev.argv) == (-errno.ENOENT, True, missing,
                                                         ["missing", mark, "two"])
    assert ev.comm == "exec_helper" and ev.ppid == os.getpid()


async def test_native_execs_are_not_flagged_compat(kernel, anyio_backend) -> None:
    mark = marker()
    async with exec_events() as events:
        proc = subprocess.Popen([TRUE, mark])
        (ev,) = await collect(events, lambda e: e.pid == proc.pid, 1)
        assert await wait(proc) == 0
    assert ev.argv == [TRUE, mark]
    assert not ev.compat and ev.entry_seen and not ev.memfd and not ev.deleted
