"""Which BPF programs and links a process holds, and whether they are gone.

Tests share the machine with other tracers (a developer's exporter, another
test run, `aioringbuf exec` in CI's second pass), so they never look for
"their" programs by name machine-wide. They read the ids of what one
process holds from /proc/PID/fdinfo (the kernel writes ``prog_id:`` for a
program fd and ``link_id:`` for a link fd), and later ask the kernel
whether exactly those ids still exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field

# The programs of bpf/exec.bpf.c, to tell its links from other objects'.
EXEC_PROGRAMS = frozenset({"on_execve_enter", "on_execveat_enter", "on_compat_enter",
                           "on_process_exec", "on_execve_exit", "on_execveat_exit",
                           "on_compat_exit", "on_process_exit"})


def _bpftool(*args: str) -> list[dict] | dict:
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, check=True,
                         timeout=30).stdout
    return json.loads(out) if out.strip() else []


@dataclass
class Held:
    """BPF objects one process holds through its fds."""

    links: dict[int, int] = field(default_factory=dict)  # link id -> its program id
    progs: set[int] = field(default_factory=set)  # program fds (loaded, maybe not attached)


def open_fds() -> set[str]:
    """This process's open fds, each as ``<fd>:<what it points to>``."""
    return {f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}" for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def held_by(pid: int) -> Held:
    """The program and link ids in /proc/PID/fdinfo (fds closed meanwhile are skipped)."""
    held = Held()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if "link_id" in info:
            held.links[int(info["link_id"])] = int(info.get("prog_id", "0"))
        elif "prog_id" in info:
            held.progs.add(int(info["prog_id"]))
    return held


def program_names(ids: set[int]) -> dict[int, str]:
    """{program id: name} for these ids, asked of the kernel one id at a time."""
    names = {}
    for pid in ids:
        try:
            info = _bpftool("prog", "show", "id", str(pid))
        except subprocess.CalledProcessError:
            continue  # gone meanwhile
        assert isinstance(info, dict)
        names[pid] = info.get("name", "")
    return names


def exec_links(pid: int | None = None) -> set[int]:
    """Ids of the exec.bpf.o links that process ``pid`` (default: this one) holds."""
    held = held_by(os.getpid() if pid is None else pid)
    names = program_names(set(held.links.values()))
    return {link for link, prog in held.links.items() if names.get(prog) in EXEC_PROGRAMS}


def live_links(ids: set[int]) -> set[int]:
    """Which of these link ids the kernel still has."""
    links = _bpftool("link", "show")
    assert isinstance(links, list)
    return ids & {link["id"] for link in links}


def live_programs(ids: set[int]) -> set[int]:
    """Which of these program ids the kernel still has."""
    progs = _bpftool("prog", "show")
    assert isinstance(progs, list)
    return ids & {p["id"] for p in progs}


class Attached:
    """What one process attached of exec.bpf.o: found by its pid, checked by id."""

    def __init__(self) -> None:
        self.links: set[int] = set()
        self.progs: set[int] = set()

    def seen(self, pid: int, timeout: float = 20) -> None:
        """Wait until ``pid`` holds each of exec.bpf.c's programs attached."""
        deadline = time.monotonic() + timeout
        while True:
            held = held_by(pid)
            names = program_names(set(held.links.values()))
            self.links = {link for link, prog in held.links.items()
                          if names.get(prog) in EXEC_PROGRAMS}
            self.progs = {held.links[link] for link in self.links}
            if {names[p] for p in self.progs} == EXEC_PROGRAMS:
                return
            assert time.monotonic() < deadline, f"pid {pid} never attached: {names}"
            time.sleep(0.05)

    def assert_gone(self, timeout: float = 20) -> None:
        """Links must be gone at once; programs within ``timeout`` seconds.

        Closing a link frees its id at once, but since Linux 6.9 the link puts
        its program only after an RCU grace period, and links on faultable
        (syscall) tracepoints wait for an RCU Tasks Trace one (6.13+), which
        takes up to seconds on a busy machine. A program still listed just
        after its process exited is in that window, not leaked: wait it out.
        """
        assert self.links, "seen() found nothing to check"
        assert not live_links(self.links), "links left attached"
        deadline = time.monotonic() + timeout
        while left := live_programs(self.progs):
            assert time.monotonic() < deadline, f"programs left loaded: {sorted(left)}"
            time.sleep(0.05)
