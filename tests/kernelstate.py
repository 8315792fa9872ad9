"""What exec.bpf.o has in the kernel right now, as bpftool sees it.

For tests that check a process left nothing behind: compare before and
after, looking only at the exec object's programs (other tests, or other
tools on the machine, may have their own programs loaded meanwhile).
"""

from __future__ import annotations

import json
import subprocess

# The programs of bpf/exec.bpf.c (bpftool shows their full names, from BTF).
EXEC_PROGRAMS = frozenset({"on_execve_enter", "on_execveat_enter", "on_execve_exit",
                           "on_execveat_exit", "on_process_exec"})


def _bpftool(*args: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def exec_programs() -> list[dict]:
    """Loaded programs of exec.bpf.o, whoever loaded them."""
    return [p for p in _bpftool("prog", "show") if p.get("name") in EXEC_PROGRAMS]


def exec_links() -> list[dict]:
    """Links in the kernel whose program is one of exec.bpf.o's."""
    ids = {p["id"] for p in exec_programs()}
    return [link for link in _bpftool("link", "show") if link.get("prog_id") in ids]


def exec_ids() -> tuple[set[int], set[int]]:
    """(link ids, program ids) of exec.bpf.o in the kernel now."""
    return {link["id"] for link in exec_links()}, {p["id"] for p in exec_programs()}


class Attached:
    """What exec.bpf.o put into the kernel between construction and :meth:`seen`."""

    def __init__(self) -> None:
        self.before = exec_ids()

    def seen(self) -> None:
        links, progs = exec_ids()
        self.links, self.progs = links - self.before[0], progs - self.before[1]
        # each of exec.bpf.c's programs is loaded and attached to its tracepoint
        n = len(EXEC_PROGRAMS)
        assert len(self.links) >= n and len(self.progs) >= n, (self.links, self.progs)

    def assert_gone(self) -> None:
        links, progs = exec_ids()
        assert not self.links & links, "links left attached"
        assert not self.progs & progs, "programs left loaded"
