"""Shared fixtures: every async test runs on asyncio, asyncio+uvloop and trio.

Kernel-backed tests need root, BPF, BTF and tracefs. Where those are
missing they skip with the reason, except under CI=true, where a skipped
test fails the run (see pytest_sessionfinish): CI must prove the kernel
paths, not skip them.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from cgroups import cgroup_root  # noqa: F401 (a fixture for the exec tests)
from chromium import chromium  # noqa: F401 (a fixture for the browser tests)

import aioringbuf
from aioringbuf import _fast

TESTS = pathlib.Path(__file__).parent
BPF_DIR = TESTS / "bpf"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict]:
    return request.param


def _kernel_problem() -> str | None:
    if os.geteuid() != 0:
        return "kernel tests need root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel has no BTF (/sys/kernel/btf/vmlinux)"
    if not os.path.isdir("/sys/kernel/tracing/events/syscalls"):
        return "tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing"
    try:
        aioringbuf.types.check_privileges()
    except aioringbuf.AioRingBufError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session", autouse=True)
def _checkout_reachable_by_nobody():
    """The unprivileged-user tests run Python as uid 65534: let it reach us."""
    from privileges import reachable_by_nobody

    here = str(TESTS.parent / "aioringbuf" / "__init__.py")
    changed = reachable_by_nobody([here, sys.executable, os.path.realpath(sys.executable)])
    yield
    for path, mode in reversed(changed):
        os.chmod(path, mode)


@pytest.fixture(scope="session")
def kernel() -> None:
    """Depend on this to mark a test as needing the real kernel."""
    problem = _kernel_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but the kernel tests cannot run: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def bpf_objects(kernel: None) -> pathlib.Path:
    """The test BPF objects, built from bpf/tests by `make -C bpf`."""
    names = ("ringgen", "layout", "getpgid", "perfgen", "adaptive")
    missing = [n for n in names if not (BPF_DIR / f"{n}.bpf.o").exists()]
    if missing:
        subprocess.run(["make", "-C", str(TESTS.parent / "bpf")], check=True)
    return BPF_DIR


@pytest.fixture(scope="session")
def bpffs(kernel: None) -> pathlib.Path:
    root = pathlib.Path("/sys/fs/bpf")
    if not os.path.ismount(root):
        subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=True)
    return root


def pytest_report_header(config: pytest.Config) -> str:
    how = "AIORINGBUF_PURE=1" if _fast.PURE else "the C extension" if _fast.IMPLEMENTATION == "c" \
        else "no C extension built"
    return f"aioringbuf hot path: {_fast.IMPLEMENTATION} ({how})"


def pytest_sessionstart(session: pytest.Session) -> None:
    # CI runs the suite once on each path; AIORINGBUF_REQUIRE_C=1 makes sure
    # the C run did not quietly fall back to pure Python (a failed build).
    if os.environ.get("AIORINGBUF_REQUIRE_C") and _fast.IMPLEMENTATION != "c":
        raise pytest.UsageError(
            "AIORINGBUF_REQUIRE_C=1 but aioringbuf._fastring is not in use: build it "
            "(pip install -e . or python setup.py build_ext --inplace) and unset AIORINGBUF_PURE"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        if reporter:
            reporter.write_line(f"CI=true: {skipped} skipped test(s) count as failures", red=True)
        session.exitstatus = 1


@pytest.fixture
def ringgen_factory(bpf_objects: pathlib.Path):
    """Load ringgen.bpf.o with a chosen ring size; everything closed after the test."""
    from ringgen import Generator

    made: list[tuple[aioringbuf.types.BpfObject, Generator]] = []

    def make(ring_size: int = 64 * 1024) -> Generator:
        obj = aioringbuf.load(
            bpf_objects / "ringgen.bpf.o", attach=False, map_sizes={"events": ring_size}
        ).open()
        gen = Generator(obj)
        made.append((obj, gen))
        return gen

    yield make
    for obj, gen in made:
        gen.close()
        obj.close()


@pytest.fixture
def perfgen_factory(bpf_objects: pathlib.Path):
    """Load perfgen.bpf.o (a perf event array); everything closed after the test."""
    from perfgen import PerfGenerator

    made: list[tuple[aioringbuf.types.BpfObject, PerfGenerator]] = []

    def make() -> PerfGenerator:
        obj = aioringbuf.load(bpf_objects / "perfgen.bpf.o", attach=False).open()
        gen = PerfGenerator(obj)
        made.append((obj, gen))
        return gen

    yield make
    for obj, gen in made:
        gen.close()
        obj.close()
