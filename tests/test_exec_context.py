"""Who and where an exec ran: each context field against /proc, container ids
from cgroups made in each runtime's shape, and the in-kernel filters.

The cgroups are made under a unique name below the cgroup v2 mount and
removed again; the processes moved into them are the tests' own children.
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys

import anyio
import pytest
from cgroups import spawn_in
from privileges import AS_NOBODY
from test_exec import TRUE, collect, marker, wait

from aioringbuf._cgroup import CgroupPaths, cgroup_of, container_id
from aioringbuf._exec import ExecEvent, ExitEvent, exec_events

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict]:
    """One event loop: what these test happens in the kernel."""
    return ("asyncio", {})


def proc_cgroup(pid: int) -> str:
    """The cgroup v2 path in /proc/PID/cgroup (the "0::" line)."""
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"no cgroup v2 line for {pid}")


async def test_context_fields_match_proc(kernel, anyio_backend, cgroup_root, tmp_path):
    """A sleeper in its own mount and pid namespaces, cgroup and login uid."""
    sleep = str(tmp_path / marker())  # a name no other exec has
    os.symlink("/bin/sleep", sleep)
    group = cgroup_root / "ctx"
    group.mkdir()

    def enter() -> None:
        (group / "cgroup.procs").write_text("0")
        pathlib.Path("/proc/self/loginuid").write_text("4242")

    async with exec_events() as events:
        unshare = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child",
                                    sleep, "30"],
                                   stdin=subprocess.DEVNULL, preexec_fn=enter)
        try:
            (ev,) = await collect(events, lambda e: e.argv == [sleep, "30"], 1)
            pid = ev.pid
            assert ev.ppid == unshare.pid != pid  # unshare forked it into the new pid ns
            for ns, value in (("mnt", ev.mntns), ("pid", ev.pidns)):
                assert value == os.stat(f"/proc/{pid}/ns/{ns}").st_ino
                assert value != os.stat(f"/proc/self/ns/{ns}").st_ino  # its own, not ours
            assert ev.loginuid == 4242 == int(pathlib.Path(f"/proc/{pid}/loginuid").read_text())
            assert ev.cgroup == proc_cgroup(pid) == "/" + str(group.relative_to(cgroup_root.parent))
            assert ev.cgroup_id == os.stat(group).st_ino
            assert ev.container_id is None
            parent_comm = pathlib.Path(f"/proc/{unshare.pid}/comm").read_text()[:-1]
            assert ev.pcomm == "unshare" == parent_comm
            assert ev.comm == os.path.basename(sleep)[:15] and ev.uid == 0
        finally:
            unshare.kill()
            await wait(unshare)


async def test_unset_login_uid_is_none(kernel, anyio_backend) -> None:
    mark = marker()
    if pathlib.Path("/proc/self/loginuid").read_text() != "4294967295":
        pytest.skip("this test runs under a login uid")  # inherited: cannot unset it
    async with exec_events() as events:
        proc = subprocess.Popen([TRUE, mark])
        (ev,) = await collect(events, lambda e: e.pid == proc.pid, 1)
        await wait(proc)
    assert ev.loginuid is None
    assert ev.pcomm == pathlib.Path("/proc/self/comm").read_text()[:-1]


CID = "0123456789abcdef" * 4
SHAPES = {
    "docker (systemd)": f"system.slice/docker-{CID}.scope",
    "docker (cgroupfs)": f"docker/{CID}",
    "containerd/CRI": f"kubepods.slice/kubepods-besteffort.slice/"
                      f"kubepods-besteffort-pod1234.slice/cri-containerd-{CID}.scope",
    "containerd (cgroupfs)": f"kubepods/burstable/pod5678/{CID}",
    "CRI-O": f"kubepods.slice/kubepods-pod9.slice/crio-{CID}.scope",
    "podman": f"machine.slice/libpod-{CID}.scope",
    "podman (nested)": f"user.slice/libpod-{CID}.scope/container",
}


async def test_container_ids_in_each_runtimes_shape(kernel, anyio_backend, cgroup_root):
    mark = marker()
    dirs = {}
    for shape, rel in {**SHAPES, "no container": "system.slice/cron.service",
                       "conmon": f"machine.slice/libpod-conmon-{CID}.scope"}.items():
        d = cgroup_root / rel
        d.mkdir(parents=True)
        dirs[shape] = d
    async with exec_events() as events:
        procs = {shape: spawn_in(d, [TRUE, mark, shape]) for shape, d in dirs.items()}
        got = {e.argv[2]: e for e in await collect(events, lambda e: e.argv[1:2] == [mark],
                                                   len(procs))}
        for p in procs.values():
            assert await wait(p) == 0
    for shape, ev in got.items():
        assert ev.cgroup == "/" + str(dirs[shape].relative_to(cgroup_root.parent)), shape
        want = None if shape in ("no container", "conmon") else CID
        assert ev.container_id == want, shape


def test_container_id_parser_shapes() -> None:
    for rel in SHAPES.values():
        assert container_id("/" + rel) == CID
    assert container_id("/") is None
    assert container_id("/user.slice/user-1000.slice/session-2.scope") is None
    assert container_id(f"/docker-{CID[:-1]}.scope") is None  # 63 hex digits: no id


def test_cgroup_paths_resolve_ids_and_forget_nothing_wrongly(kernel, cgroup_root) -> None:
    d = cgroup_root / "gone-soon"
    d.mkdir()
    cid = os.stat(d).st_ino
    paths = CgroupPaths(cache_max=2)
    assert paths.lookup(cid) == ("/" + str(d.relative_to(cgroup_root.parent)), None)
    d.rmdir()
    assert paths.lookup(cid)[0] != ""  # cached: ids are never reused
    fresh = CgroupPaths()
    assert fresh.lookup(cid) == ("", None)  # gone: ""
    assert fresh.lookup(1) == ("/", None)  # the root cgroup
    for i in range(5):  # the cache stays bounded
        paths.lookup(10**12 + i)
    assert len(paths._cache) == 2
    assert cgroup_of(str(cgroup_root)) == (os.stat(cgroup_root).st_ino, 1)
    assert cgroup_of("/" + cgroup_root.name) == (os.stat(cgroup_root).st_ino, 1)
    with pytest.raises(FileNotFoundError):
        cgroup_of("/no-such-cgroup-aiorb")


# -- filters in the kernel ----------------------------------------------------


async def test_cgroup_filter_keeps_only_that_subtree(kernel, anyio_backend, cgroup_root):
    mark = marker()
    inner = cgroup_root / "a" / "b"
    inner.mkdir(parents=True)
    async with exec_events(cgroup=cgroup_root / "a") as events:
        outside = spawn_in(None, [TRUE, mark, "outside"])
        inside = spawn_in(inner, [TRUE, mark, "inside"])
        await wait(outside), await wait(inside)
        (ev,) = await collect(events, lambda e: mark in e.argv, 1)
        with anyio.move_on_after(0.5):  # nothing else arrives: not ours, not anyone's
            extra = await events.receive()
            raise AssertionError(f"outside the cgroup: {extra}")
        st = events.stats()
    assert ev.argv == [TRUE, mark, "inside"] and ev.pid == inside.pid
    # Only what matched entered the ring: the child's exec of /bin/true, and
    # nothing before it (it moved itself in after the fork, before exec).
    assert (st.delivered, st.kernel_drops) == (1, 0)


async def test_uid_filter(kernel, anyio_backend) -> None:
    mark = marker()
    async with exec_events(uid=65534) as events:
        root = subprocess.Popen([TRUE, mark, "root"])
        nobody = subprocess.Popen([*AS_NOBODY, TRUE, mark, "nobody"])
        await wait(root), await wait(nobody)
        got = await collect(events, lambda e: mark in e.argv, 1)
        with anyio.move_on_after(0.5):
            while True:
                ev = await events.receive()
                assert ev.uid == 65534, ev
                if mark in ev.argv:
                    got.append(ev)
    assert [e.argv[-1] for e in got] == ["nobody"] and got[0].uid == 65534


async def test_failed_filter_keeps_only_failures(kernel, anyio_backend, tmp_path) -> None:
    mark = marker()
    missing = str(tmp_path / "missing")
    async with exec_events(failed=True, cgroup="/") as events:
        ok = subprocess.Popen([TRUE, mark])
        code = f"import os; os.execv({missing!r}, [{missing!r}, {mark!r}])"
        bad = subprocess.Popen(["python3", "-c", code], stderr=subprocess.DEVNULL)
        await wait(ok), await wait(bad)
        got = await collect(events, lambda e: mark in e.argv, 1)
        with anyio.move_on_after(0.5):
            while True:
                ev = await events.receive()
                assert ev.ret < 0, ev  # no success of anyone enters the ring
    assert got[0].ret == -errno.ENOENT and got[0].filename == missing


async def test_success_filter_keeps_failures_out_and_counts_them(kernel, anyio_backend,
                                                                  cgroup_root) -> None:
    """failed=False (the CLI's default): no failed attempt enters the ring;
    filtered() counts each one that the uid/cgroup filters let through."""
    mark = marker()
    group = cgroup_root / "succeeded"
    group.mkdir()
    missing = str(cgroup_root / "missing")
    fail = f'for i in 1 2 3; do "{missing}" {mark}; done; exec {TRUE} {mark}'
    async with exec_events(failed=False, cgroup=group) as events:
        assert events.filtered() == 0
        shell = spawn_in(group, ["/bin/sh", "-c", fail])
        await wait(shell)
        got = await collect(events, lambda e: mark in e.argv and e.filename == TRUE, 1)
        with anyio.move_on_after(0.5):
            while True:
                got.append(await events.receive())
        assert events.filtered() == 3  # the cgroup holds our three failures only
        assert events.stats().kernel_drops == 0  # filtered is not dropped
    assert all(ev.ret == 0 for ev in got)
    assert [ev.pid for ev in got if ev.filename == TRUE] == [shell.pid]
    assert events.filtered() == 3  # kept after close


def test_bad_filters_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="uid"):
        exec_events(uid=-1)
    with pytest.raises(FileNotFoundError, match="cgroup"):
        exec_events(cgroup="/no-such-cgroup-aiorb")


# -- exits on the same ring ---------------------------------------------------


async def test_exits_arrive_after_their_exec_with_code_and_signal(kernel, anyio_backend,
                                                                   cgroup_root) -> None:
    group = cgroup_root / "exits"
    group.mkdir()
    async with exec_events(exits=True, cgroup=group) as events:
        code3 = spawn_in(group, ["/bin/sh", "-c", "exit 3"])
        killed = spawn_in(group, ["/bin/sleep", "30"])
        fork = "import os\nif os.fork() == 0: os._exit(5)\nos.wait()"
        forked = spawn_in(group, [sys.executable, "-c", fork])
        got: list = []

        async def read() -> None:
            async for ev in events:
                got.append(ev)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            assert await wait(code3) == 3 and await wait(forked) == 0
            with anyio.fail_after(10):
                while not any(isinstance(e, ExecEvent) and e.pid == killed.pid for e in got):
                    await anyio.sleep(0.01)
            killed.kill()
            assert await wait(killed) == -9
            with anyio.fail_after(10):
                while sum(isinstance(e, ExitEvent) for e in got) < 4:  # 3 children + 1 fork
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
    exits = {e.pid: e for e in got if isinstance(e, ExitEvent)}
    execs = {e.pid: i for i, e in enumerate(got) if isinstance(e, ExecEvent)}
    e = exits[code3.pid]
    assert (e.exit_code, e.signal, e.comm, e.ppid) == (3, 0, "sh", os.getpid())
    assert e.since_exec and 0 < e.duration_ns < 10**10
    assert got.index(e) > execs[code3.pid]  # after its exec, on the same ring
    e = exits[killed.pid]
    assert (e.exit_code, e.signal, e.comm) == (0, 9, "sleep")
    (child,) = [e for pid, e in exits.items() if pid not in execs]  # forked, never exec'd
    assert (child.exit_code, child.signal, child.ppid) == (5, 0, forked.pid)
    assert not child.since_exec and child.duration_ns > 0
    assert exits[forked.pid].exit_code == 0
    assert {e.uid for e in exits.values()} == {0}
    assert len(exits) == 4  # filtered in the kernel: no other process of the machine
