"""The sdist and the wheel as a newcomer gets them: built, unpacked, installed.

``python -m build`` makes the sdist from this checkout and the wheel from
that sdist (as a user's pip would). The sdist must rebuild the BPF objects
byte for byte and run tests; the wheel must carry the programs, the header,
the licences and the metadata; both, installed into fresh venvs, must give
a working ``aioringbuf exec`` and build a program of the user's own.
"""

from __future__ import annotations

import email.parser
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
import zipfile

import pytest
from cliproc import TRACING, wait_stderr

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "aioringbuf/__init__.py").read_text())[1]
EXPRESSION = "MIT AND (GPL-2.0-only OR BSD-2-Clause)"
LICENCE_FILES = ["LICENSE", "LICENSES/BSD-2-Clause.txt", "LICENSES/GPL-2.0-only.txt",
                 "LICENSES/MIT.txt"]
# What the sdist carries from the checkout; build products are rebuilt from it.
SDIST_DIRS = ("aioringbuf", "bpf", "tests", "examples", "LICENSES")
BUILD_PRODUCTS = re.compile(r"(^|/)(__pycache__|build)/|\.(so|pyc)$|^tests/bpf/")


def sh(*argv: str | os.PathLike, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kw)
    assert proc.returncode == 0, f"{argv}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def source_files() -> set[str]:
    """The checkout's files under SDIST_DIRS (git's list where there is one)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = sh("git", "-C", ROOT, "ls-files", "--", *SDIST_DIRS).stdout.split("\n")
        files = {f for f in out if f and (ROOT / f).exists()}
    else:  # an unpacked sdist
        files = {str(p.relative_to(ROOT)) for d in SDIST_DIRS for p in (ROOT / d).rglob("*")
                 if p.is_file()}
    return {f for f in files if not BUILD_PRODUCTS.search(f)}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """(sdist, wheel), the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--outdir", out, ROOT, timeout=400)
    (sdist,) = out.glob("aioringbuf-*.tar.gz")
    (wheel,) = out.glob("aioringbuf-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def unpacked_sdist(dists, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    where = tmp_path_factory.mktemp("sdist")
    with tarfile.open(dists[0]) as tar:
        tar.extractall(where, filter="data")
    return where / f"aioringbuf-{VERSION}"


@pytest.mark.timeout(420)
def test_sdist_holds_every_source_and_no_build_product(dists, unpacked_sdist) -> None:
    names = {str(p.relative_to(unpacked_sdist)) for p in unpacked_sdist.rglob("*")
             if p.is_file()}
    missing = source_files() - names
    assert missing == set(), "the sdist lacks files of the checkout"
    for must in ["pyproject.toml", "setup.py", "README.md", "MANIFEST.in", *LICENCE_FILES,
                 "bpf/Makefile", "bpf/exec.bpf.c", "aioringbuf/include/aioringbuf.bpf.h",
                 "aioringbuf/_bpf/exec.bpf.o", "aioringbuf/_c/module.c", "tests/conftest.py",
                 "examples/web/app.py"]:
        assert must in names, must
    assert [n for n in names if BUILD_PRODUCTS.search(n)] == []
    assert "License-Expression: " + EXPRESSION in (unpacked_sdist / "PKG-INFO").read_text()


@pytest.mark.timeout(300)
def test_sdist_rebuilds_the_shipped_programs_byte_for_byte(unpacked_sdist, kernel) -> None:
    shipped = (unpacked_sdist / "aioringbuf/_bpf/exec.bpf.o").read_bytes()
    assert shipped == (ROOT / "aioringbuf/_bpf/exec.bpf.o").read_bytes()
    sh("make", "-s", "-B", "-C", unpacked_sdist / "bpf")
    assert (unpacked_sdist / "aioringbuf/_bpf/exec.bpf.o").read_bytes() == shipped
    built = sorted(p.name for p in (unpacked_sdist / "tests/bpf").glob("*.bpf.o"))
    assert built == sorted(p.name.replace(".c", ".o")
                           for p in (unpacked_sdist / "bpf/tests").glob("*.bpf.c"))


@pytest.mark.timeout(300)
def test_the_sdist_runs_its_own_tests(unpacked_sdist, kernel) -> None:
    """A packager's run: tests from the unpacked sdist against its own package."""
    if not (unpacked_sdist / "tests/bpf/getpgid.bpf.o").exists():
        sh("make", "-s", "-C", unpacked_sdist / "bpf")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORINGBUF_")}
    env.update(PYTHONPATH=str(unpacked_sdist), AIORINGBUF_PURE="1")
    proc = sh(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
              "tests/test_licence.py", "tests/test_layout_kernel.py", "tests/test_codec.py",
              cwd=unpacked_sdist, env=env)
    assert re.search(r"^\d+ passed", proc.stdout.splitlines()[-1]), proc.stdout
    assert "failed" not in proc.stdout.splitlines()[-1] and "skipped" not in proc.stdout


@pytest.mark.timeout(420)
def test_wheel_from_the_sdist_ships_programs_header_licences_and_no_tests(dists) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = email.parser.Parser().parsestr(
            zf.read(f"aioringbuf-{VERSION}.dist-info/METADATA").decode())
        entry_points = zf.read(f"aioringbuf-{VERSION}.dist-info/entry_points.txt").decode()
        assert zf.read("aioringbuf/_bpf/exec.bpf.o") == \
            (ROOT / "aioringbuf/_bpf/exec.bpf.o").read_bytes()
        assert zf.read("aioringbuf/include/aioringbuf.bpf.h") == \
            (ROOT / "aioringbuf/include/aioringbuf.bpf.h").read_bytes()
    py = {str(p.relative_to(ROOT)) for p in (ROOT / "aioringbuf").glob("*.py")}
    assert py - names == set()
    assert {"aioringbuf/py.typed", "aioringbuf/_bpf/exec.bpf.o",
            "aioringbuf/include/aioringbuf.bpf.h"} <= names
    assert [n for n in names if re.fullmatch(r"aioringbuf/_fastring\..*\.so", n)], \
        "the C extension was not built into the wheel"
    for lic in LICENCE_FILES:
        assert f"aioringbuf-{VERSION}.dist-info/licenses/{lic}" in names, lic
    assert [n for n in names if n.startswith(("tests/", "bpf/", "examples/"))] == []
    assert [n for n in names if n.endswith(".c")] == []

    assert meta["License-Expression"] == EXPRESSION
    assert sorted(meta.get_all("License-File")) == sorted(LICENCE_FILES)
    assert meta["Requires-Python"] == ">=3.10"
    requires = meta.get_all("Requires-Dist")
    assert "pylibbpf<0.0.8,>=0.0.6" in requires
    assert {"trio", "uvloop", "metrics", "web"} <= set(meta.get_all("Provides-Extra"))
    assert any(r.startswith("trio") and 'extra == "trio"' in r for r in requires)
    assert any(r.startswith("uvloop") and 'extra == "uvloop"' in r for r in requires)
    classifiers = set(meta.get_all("Classifier"))
    for c in ["Framework :: AnyIO", "Framework :: Trio", "Typing :: Typed",
              "Operating System :: POSIX :: Linux",
              *(f"Programming Language :: Python :: 3.{m}" for m in range(10, 14))]:
        assert c in classifiers, c
    assert "bpf" in meta["Keywords"].split(",")
    assert "aioringbuf = aioringbuf.__main__:main" in entry_points


def venv_with(dist: pathlib.Path, where: pathlib.Path) -> pathlib.Path:
    """A fresh venv of this Python with ``dist`` installed; its bin directory."""
    base = getattr(sys, "_base_executable", sys.executable)
    sh(base, "-m", "venv", where)
    sh(where / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
       dist, timeout=600)
    return where / "bin"


def exec_seen_by_installed_cli(bindir: pathlib.Path, cwd: pathlib.Path) -> list[str]:
    """Run the installed `aioringbuf exec --json`, make one exec, return its lines."""
    mark = f"aiorb-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIORINGBUF_", "PYTHON"))}
    proc = subprocess.Popen([bindir / "aioringbuf", "exec", "--json", "--ppid", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, env=env)
    try:
        _, err = wait_stderr(proc, TRACING, timeout=60)
        subprocess.run(["/bin/echo", mark], stdout=subprocess.DEVNULL, check=True, timeout=20)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err += rest
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    return [line for line in out.decode().splitlines() if mark in line]


USER_PROGRAM = """\
// A program of the user's own, built against the installed header only.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "aioringbuf.bpf.h"

AIORINGBUF_RINGBUF(events, 4096);

SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	__u64 *seq;

	if (ctx->args[0] != MAGIC)
		return 0;
	seq = AIORINGBUF_RESERVE(events, sizeof(*seq));
	if (!seq)
		return 0;
	*seq = bpf_ktime_get_ns();
	bpf_ringbuf_submit(seq, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
"""

USER_SCRIPT = """\
import os, sys
import anyio
import aioringbuf

N, MAGIC = 1000, int(sys.argv[2])
assert "site-packages" in aioringbuf.__file__, aioringbuf.__file__

async def main():
    async with aioringbuf.load(sys.argv[1]) as obj:
        async with obj.ring_buffer("events") as events:
            for _ in range(N):          # the 4 KiB ring holds far fewer: drops
                try:
                    os.getpgid(MAGIC)
                except ProcessLookupError:
                    pass
            seen = 0
            while True:
                with anyio.move_on_after(1):
                    await events.__anext__()
                    seen += 1
                    continue
                break
            s = events.stats()
            print(seen, s.delivered, s.kernel_drops)

anyio.run(main)
"""


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_into_a_fresh_venv_it_traces_execs_and_builds_your_programs(
    kind: str, dists, tmp_path: pathlib.Path, kernel
) -> None:
    bindir = venv_with(dists[1] if kind == "wheel" else dists[0], tmp_path / "venv")

    lines = exec_seen_by_installed_cli(bindir, tmp_path)
    assert len(lines) == 1 and '"/bin/echo"' in lines[0], lines

    # The README's two commands, with the header the package installed.
    include = sh(bindir / "python", "-c",
                 "from aioringbuf.types import include_dir; print(include_dir())",
                 cwd=tmp_path).stdout.strip()
    assert include.startswith(str(tmp_path / "venv")), include
    assert pathlib.Path(include, "aioringbuf.bpf.h").is_file()
    (tmp_path / "prog.bpf.c").write_text(USER_PROGRAM)
    with open(tmp_path / "vmlinux.h", "w") as f:
        subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format",
                        "c"], stdout=f, check=True, timeout=60)
    magic = 2_000_000_000 + os.getpid()  # beyond pid_max: getpgid fails, the probe still fires
    sh("clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-DMAGIC={magic}",
       "-I.", f"-I{include}", "-c", "prog.bpf.c", "-o", "prog.bpf.o", cwd=tmp_path)
    (tmp_path / "user.py").write_text(textwrap.dedent(USER_SCRIPT))
    out = sh(bindir / "python", "user.py", "prog.bpf.o", str(magic), cwd=tmp_path).stdout
    seen, delivered, kernel_drops = (int(x) for x in out.split())
    assert seen == delivered > 0
    assert kernel_drops > 0
    assert delivered + kernel_drops == 1000
