"""exec_events(): real processes exec'ing under the real kernel, field by field.

Each test attaches exec.bpf.o, makes this process's children exec things
with distinctive arguments, and picks their records out of the machine-wide
stream by pid, parent pid and a marker argument unique to the test.
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import anyio
import pytest
from cgroups import spawn_in
from kernelstate import EXEC_PROGRAMS, exec_links, live_links

import aioringbuf
import aioringbuf.exec
from aioringbuf._exec import HEADER_SIZE, ExecEvent, ExecEvents, exec_events

pytestmark = pytest.mark.anyio

TRUE = "/bin/true"
AT_EMPTY_PATH = 0x1000


def marker() -> str:
    """An argument no other exec on the machine will carry."""
    return f"aiorb-{uuid.uuid4().hex[:12]}"


def spawn(argv: list, **kw) -> subprocess.Popen:
    """Start a child; its own exec is the event a test looks for."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


def python(code: str) -> subprocess.Popen:
    """A Python child running ``code`` (prints go to a pipe)."""
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


async def wait(proc: subprocess.Popen) -> int:
    return await anyio.to_thread.run_sync(proc.wait)


async def collect(
    events: ExecEvents, want: Callable[[ExecEvent], bool], count: int, timeout: float = 10
) -> list[ExecEvent]:
    """The first ``count`` events ``want`` accepts (fails after ``timeout`` s)."""
    got: list[ExecEvent] = []
    with anyio.fail_after(timeout):
        async for ev in events:
            if want(ev):
                got.append(ev)
                if len(got) == count:
                    return got
    raise AssertionError("stream ended")


@pytest.fixture
def long_true(tmp_path: pathlib.Path) -> str:
    """A path of more than 256 bytes (nested directories) to a symlink to /bin/true."""
    d = tmp_path
    for i in range(6):
        d = d / f"{i}-{'d' * 60}"
    d.mkdir(parents=True)
    link = d / "aiorb-true"
    link.symlink_to(TRUE)
    assert len(str(link)) > 256
    return str(link)


async def test_argv_filename_and_ids_arrive_exactly(kernel, anyio_backend, long_true) -> None:
    mark = marker()
    raw = [long_true.encode(), mark.encode(), b""] + [f"arg{i}".encode() for i in range(44)]
    raw += [b"caf\xc3\xa9", b"not-utf8-\xff\xfe", b"spaces and\ttabs"]
    assert len(raw) == 50
    async with exec_events() as events:
        proc = spawn(raw)
        (ev,) = await collect(events, lambda e: mark in e.argv, 1)
        assert await wait(proc) == 0
    assert ev.pid == ev.tid == proc.pid
    assert ev.ppid == os.getpid()
    assert (ev.uid, ev.gid) == (os.getuid(), os.getgid())
    assert ev.filename == long_true
    assert ev.argv == [aioringbuf.exec.kernel_text(a) for a in raw]
    assert ev.argv[-3:] == ["café", "not-utf8-\U0010ffff\U0010fffe", "spaces and\ttabs"]
    assert aioringbuf.exec.kernel_bytes(ev.argv[-2]) == b"not-utf8-\xff\xfe"
    assert ev.ret == 0
    assert ev.comm == "aiorb-true"  # the new program's name, from the symlink
    assert not ev.args_truncated and not ev.filename_truncated
    assert (ev.syscall, ev.dirfd, ev.at_flags) == ("execve", -100, 0)
    assert ev.cgroup_id > 0
    assert abs(ev.wall_time.timestamp() - time.time()) < 10
    assert ev.ts_ns <= time.monotonic_ns()


async def test_argv_beyond_the_limits_is_cut_and_flagged(kernel, anyio_backend, tmp_path):
    mark = marker()
    many = [TRUE, mark] + [str(i) for i in range(200)]  # many strings: all fit in 4 KiB
    huge = [TRUE, mark, "x" * 5000, "after"]  # more than 4 KiB
    missing = str(tmp_path / "missing")
    failing = [missing, mark] + [str(i) for i in range(200)]  # read from the caller: 128
    async with exec_events() as events:
        p1, p2 = spawn(many), spawn(huge)
        p3 = python(f"import os; os.execv({missing!r}, {failing!r})")
        got = {e.pid: e for e in await collect(events, lambda e: mark in e.argv, 3)}
        await wait(p1), await wait(p2), await wait(p3)
    ev = got[p1.pid]
    assert not ev.args_truncated and ev.argv == many and ev.argc == len(many)
    ev = got[p2.pid]
    assert ev.args_truncated and ev.argv[:2] == huge[:2] and ev.argc == 4
    assert len(ev.argv) == 3 and huge[2].startswith(ev.argv[2])
    assert sum(len(a) + 1 for a in ev.argv) == 4096  # the whole budget, NULs included
    assert ev.ret == 0
    ev = got[p3.pid]
    assert ev.ret == -errno.ENOENT and ev.filename == missing
    assert ev.args_truncated and ev.argv == failing[:128] and ev.argc == 128


async def test_failed_execs_carry_the_negative_errno(kernel, anyio_backend, tmp_path) -> None:
    missing = tmp_path / "no-such-program"
    not_executable = tmp_path / "not-executable"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    too_long = "/" + "x" * 5000
    script = 'exec "$0"'  # sh execs the file itself: the failing exec has sh's pid
    async with exec_events() as events:
        procs = {path: spawn(["/bin/sh", "-c", script, path])
                 for path in (str(missing), str(not_executable), too_long)}
        by_pid = {p.pid: path for path, p in procs.items()}
        got = await collect(events, lambda e: e.pid in by_pid and len(e.argv) == 1
                            and by_pid[e.pid].startswith(e.argv[0]), 3)
        for p in procs.values():
            assert await wait(p) != 0
    result = {by_pid[e.pid]: e for e in got}
    assert result[str(missing)].ret == -errno.ENOENT
    assert result[str(not_executable)].ret == -errno.EACCES
    long_ev = result[too_long]
    assert long_ev.ret == -errno.ENAMETOOLONG
    assert long_ev.filename_truncated and too_long.startswith(long_ev.filename)
    assert len(long_ev.filename) == 4095  # PATH_MAX with its NUL
    assert long_ev.args_truncated and len(long_ev.argv[0]) == 4095  # 4 KiB of argv
    for path, ev in result.items():
        assert ev.ppid == os.getpid() and ev.comm == "sh"  # failed: the caller's name
        if path != too_long:
            assert ev.filename == path and ev.argv == [path]
            assert not ev.filename_truncated and not ev.args_truncated


EXECVEAT = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/bin", os.O_RDONLY | os.O_DIRECTORY)
print(fd, flush=True)
argv = (ctypes.c_char_p * 3)(b"true", sys.argv[1].encode(), None)
envp = (ctypes.c_char_p * 1)(None)
libc.syscall(322, fd, b"true", argv, envp, 0)  # execveat(fd, "true", argv, envp, 0)
sys.exit(99)
"""

FEXECVE = """
import os, sys
fd = os.open("/bin/true", os.O_RDONLY)
print(fd, flush=True)
os.execve(fd, ["true", sys.argv[1]], {})  # fexecve: execveat(fd, "", ..., AT_EMPTY_PATH)
"""

THREAD_EXEC = """
import os, sys, threading
def run():
    print(threading.get_native_id(), flush=True)
    os.execv("/bin/true", ["/bin/true", sys.argv[1]])
t = threading.Thread(target=run)
t.start()
t.join()
"""


async def run_python(code: str, mark: str) -> tuple[subprocess.Popen, int]:
    """Run ``code`` with ``mark`` as argv[1]; return the child and what it printed."""
    proc = subprocess.Popen([sys.executable, "-c", code, mark], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await anyio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 0, out
    return proc, int(out)


async def test_execveat_fexecve_and_exec_from_a_thread(kernel, anyio_backend) -> None:
    mark = marker()
    async with exec_events() as events:
        at, at_fd = await run_python(EXECVEAT, mark)
        fexec, fexec_fd = await run_python(FEXECVE, mark)
        threaded, tid = await run_python(THREAD_EXEC, mark)
        got = {e.pid: e for e in await collect(events, lambda e: mark in e.argv[1:2], 3)}

    # The kernel's name for a file relative to a dirfd, and for the fd itself.
    ev = got[at.pid]
    assert (ev.syscall, ev.dirfd, ev.at_flags, ev.filename) == (
        "execveat", at_fd, 0, f"/dev/fd/{at_fd}/true")
    assert ev.argv == ["true", mark] and ev.ret == 0 and ev.tid == at.pid

    ev = got[fexec.pid]
    assert (ev.syscall, ev.dirfd, ev.at_flags, ev.filename) == (
        "execveat", fexec_fd, AT_EMPTY_PATH, f"/dev/fd/{fexec_fd}")
    assert ev.argv == ["true", mark] and ev.ret == 0
    st = os.stat(TRUE)
    assert (ev.ino, ev.dev, ev.deleted, ev.memfd) == (st.st_ino, st.st_dev, False, False)

    # A non-main thread exec'd: it becomes the process (pid) but entered as `tid`.
    ev = got[threaded.pid]
    assert tid != threaded.pid
    assert (ev.pid, ev.tid, ev.ret, ev.comm) == (threaded.pid, tid, 0, "true")
    assert ev.argv == [TRUE, mark] and ev.ppid == os.getpid()
    for ev in got.values():
        assert ev.ppid == os.getpid()


BURST_WORKERS = 4
BURST_EACH = 500


def start_burst(mark: str, cgroup: pathlib.Path | None = None) -> list[subprocess.Popen]:
    """4 shells each exec'ing `/bin/true <mark>` 500 times, as fast as they can
    (in ``cgroup``, if given)."""
    loop = f'for i in $(seq {BURST_EACH}); do {TRUE} {mark}; done'
    return [spawn_in(cgroup, ["/bin/sh", "-c", loop]) for _ in range(BURST_WORKERS)]


def is_burst(mark: str) -> Callable[[ExecEvent], bool]:
    return lambda e: e.argv == [TRUE, mark]


async def test_a_burst_of_2000_execs_arrives_or_is_counted(kernel, anyio_backend) -> None:
    mark = marker()
    want = is_burst(mark)
    async with exec_events() as events:
        workers = start_burst(mark)
        shells = {p.pid for p in workers}
        got: list[ExecEvent] = []

        async def consume() -> None:
            async for ev in events:
                if want(ev):
                    assert ev.ppid in shells and ev.ret == 0
                    got.append(ev)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for p in workers:
                assert await wait(p) == 0
            with anyio.move_on_after(10):  # until everything produced is read
                while len(got) < BURST_WORKERS * BURST_EACH:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
        st = events.stats()
    lost = st.kernel_drops + st.queue_drops
    print(f"burst: {len(got)} delivered, {st.kernel_drops} kernel drops, "
          f"{st.queue_drops} queue drops, {st.delivered} delivered in all")
    assert len(got) <= BURST_WORKERS * BURST_EACH
    assert BURST_WORKERS * BURST_EACH - len(got) <= lost
    if lost == 0:
        assert len(got) == BURST_WORKERS * BURST_EACH
    assert len({e.pid for e in got}) == len(got)  # each exec is its own process


async def test_a_ring_too_small_for_the_burst_counts_what_it_loses(kernel, anyio_backend,
                                                                   cgroup_root):
    """Nothing reads during the burst: the 16 KiB ring keeps ~130 records and the
    BPF side counts every other one as a kernel drop. The burst runs in a
    cgroup of its own, filtered in the kernel, so the count is exact even
    on a machine where other processes exec meanwhile."""
    mark = marker()
    want = is_burst(mark)
    async with exec_events(ring_size=16384, cgroup=cgroup_root) as events:
        workers = start_burst(mark, cgroup_root)
        for p in workers:
            assert await wait(p) == 0
        got = []
        with anyio.move_on_after(0.5):
            async for ev in events:
                got.append(ev)
        st = events.stats()
    ours = [e for e in got if want(e)]
    # the rest: each worker's own exec of sh and of seq, all in the cgroup
    assert {e.comm for e in got if not want(e)} <= {"sh", "seq"}
    attempts = BURST_WORKERS * (BURST_EACH + 2)
    print(f"small ring: {len(ours)} of ours delivered, {st.kernel_drops} kernel drops, "
          f"{attempts} attempts")
    assert 0 < len(ours) < 200
    # Every attempt in the cgroup is delivered or counted, exactly.
    assert st.delivered == len(got)
    assert st.delivered + st.kernel_drops == attempts
    assert st.queue_drops == 0
    assert events.enter_drops() == 0  # the in-flight table was never full


async def trigger_once_attached(mark: str, seen: set[int]) -> None:
    """Exec `/bin/true <mark>` once this process holds exec.bpf.o's links;
    put their ids into ``seen``."""
    with anyio.fail_after(20):
        while not (links := await anyio.to_thread.run_sync(exec_links)):
            await anyio.sleep(0.01)
    seen |= links
    await wait(spawn([TRUE, mark]))


async def test_bare_loop_loads_lazily_and_detaches_when_cancelled(kernel, anyio_backend):
    mark = marker()
    stream = exec_events()
    assert exec_links() == set()  # nothing happens before the first __anext__
    with pytest.raises(RuntimeError, match="not loaded"):
        stream.stats()
    found = False
    seen: set[int] = set()
    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(trigger_once_attached, mark, seen)
            async for ev in stream:
                if mark in ev.argv:
                    found = True
                    assert exec_links()  # attached while iterating
                    scope.cancel()
    assert found and scope.cancelled_caught
    # the cancellation released it all: the links it had are gone from the kernel
    assert stream.closed and seen and live_links(seen) == set()
    assert stream.stats().delivered >= 1  # final counters outlive the stream
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()


async def test_bare_loop_left_with_break_detaches(kernel, anyio_backend) -> None:
    mark = marker()
    seen: set[int] = set()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(trigger_once_attached, mark, seen)
            async for ev in exec_events():
                if mark in ev.argv:
                    break
    # the loop dropped its iterator: CPython collected it, and it released all
    assert seen and live_links(seen) == set()


async def test_async_with_attaches_on_entry_and_detaches_on_exit(kernel, anyio_backend):
    async with exec_events(overflow="drop_oldest", maxsize=10) as events:
        seen = exec_links()
        assert len(seen) == len(EXEC_PROGRAMS)  # each program attached, by this process
        mark = marker()
        await wait(spawn([TRUE, mark]))
        (ev,) = await collect(events, lambda e: mark in e.argv, 1)
        assert ev.argv == [TRUE, mark]
    assert events.closed and live_links(seen) == set() and exec_links() == set()
    assert events.enter_drops() == 0


async def test_drop_policies_need_async_with(kernel, anyio_backend) -> None:
    stream = exec_events(overflow="drop_newest")
    with pytest.raises(aioringbuf.AioRingBufError, match="async with"):
        await stream.receive()
    assert exec_links() == set()  # refused before loading anything


def test_bad_options_fail_at_the_call() -> None:
    with pytest.raises(aioringbuf.RingSizeError):
        exec_events(ring_size=10_000)
    with pytest.raises(ValueError, match="overflow"):
        exec_events(overflow="drop_everything")  # type: ignore[arg-type]


def record(fn: bytes, args: list[bytes], *, argc: int | None = None, flags: int = 0,
           ret: int = -2, kind: int = 1, loginuid: int = 0xFFFFFFFF) -> bytes:
    """A record as exec.bpf.c writes it (for the decoder's unit tests)."""
    from aioringbuf._exec import _HEADER

    blob = b"".join(a + b"\0" for a in args)
    header = _HEADER.pack(kind, flags, 1, 2, 99, (8 << 20) | 1, 10, 11, 3, 4, 5, 6, 7, loginuid,
                          ret, -100, 0, len(args) if argc is None else argc, len(fn), len(blob),
                          b"comm\0", b"parent\0")
    return header + fn + blob


def test_decoder_round_trip_and_size_checks() -> None:
    ev = aioringbuf.types.decode(ExecEvent, record(b"/bin/x\0", [b"x", b"", b"\xff"], flags=1))
    assert (ev.ts_ns, ev.cgroup_id, ev.pid, ev.tid, ev.ppid, ev.uid, ev.gid) == (1, 2, 3, 4, 5,
                                                                                   6, 7)
    assert (ev.ret, ev.comm, ev.filename) == (-2, "comm", "/bin/x")
    assert ev.argv == ["x", "", "\U0010ffff"]
    assert ev.args_truncated and not ev.filename_truncated
    assert (ev.pcomm, ev.loginuid, ev.mntns, ev.pidns, ev.ino) == ("parent", None, 10, 11, 99)
    assert ev.dev == os.makedev(8, 1) and ev.argc == 3
    assert not (ev.compat or ev.memfd or ev.deleted) and ev.entry_seen
    flags = 8 | 16 | 32 | 64
    ev = aioringbuf.types.decode(ExecEvent, record(b"memfd:x\0", [b"a"], argc=7, flags=flags, ret=0,
                                             loginuid=1000))
    assert ev.compat and ev.deleted and ev.memfd and not ev.entry_seen
    assert ev.argc == 7 and ev.args_truncated  # a success keeps fewer than argc: cut
    assert ev.loginuid == 1000
    empty = aioringbuf.types.decode(ExecEvent, record(b"", []))
    assert (empty.filename, empty.argv) == ("", [])
    with pytest.raises(aioringbuf.RecordSizeError):
        aioringbuf.types.decode(ExecEvent, b"\0" * (HEADER_SIZE - 1))
    with pytest.raises(aioringbuf.RecordSizeError):
        aioringbuf.types.decode(ExecEvent, record(b"/bin/x\0", [b"x"]) + b"\0")
    with pytest.raises(aioringbuf.DecodeError):
        aioringbuf.types.decode(ExecEvent, record(b"/bin/x\0", [b"x"], argc=2))
    with pytest.raises(aioringbuf.DecodeError, match="kind"):
        aioringbuf.types.decode(ExecEvent, record(b"/bin/x\0", [b"x"], kind=2))
    bad = bytearray(record(b"/bin/x\0", [b"x"], ret=0))
    bad[-1] = ord("y")  # the argv area does not end with a NUL
    with pytest.raises(aioringbuf.DecodeError):
        aioringbuf.types.decode(ExecEvent, bytes(bad))


async def test_close_counts_what_the_ring_still_held(kernel, anyio_backend, cgroup_root):
    """Closed with records still in the ring: they are counted as unread, and
    delivered + kernel_drops + queue_drops + decode_errors + unread == attempts."""
    mark = marker()
    async with exec_events(cgroup=cgroup_root) as events:
        workers = start_burst(mark, cgroup_root)
        for p in workers:
            assert await wait(p) == 0
        got = await collect(events, is_burst(mark), 10)  # read a few, leave the rest
        assert events.unread() is not None and events.unread() > 0
    st = events.stats()
    attempts = BURST_WORKERS * (BURST_EACH + 2)  # each worker also execs sh and seq
    unread = events.unread()
    print(f"closed early: {st.delivered} delivered, {unread} unread, "
          f"{st.kernel_drops} kernel drops, {attempts} attempts")
    assert len(got) == 10 and st.delivered >= 10 and unread > 0
    assert st.delivered + st.kernel_drops + st.queue_drops + st.decode_errors + unread == attempts
    assert events.written() == attempts - st.kernel_drops
    assert st.unread == unread  # the same bucket, in stats()
