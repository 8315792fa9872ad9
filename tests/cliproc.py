"""`python -m aioringbuf ...` as a child process, the one way tests run it.

The command line, the environment that finds this checkout, and waiting
(with a deadline) for the line on stderr that says the child is ready:
``exec`` prints "tracing" once its programs are attached, ``exporter``
"serving URL/metrics" once it listens. A child that exits first, or says
nothing in time, fails the test with what it did say.
"""

from __future__ import annotations

import os
import pathlib
import re
import select
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRACING = re.compile(rb"tracing")
SERVING = re.compile(rb"serving (http://\S+)/metrics")


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with this checkout on PYTHONPATH, plus ``extra``."""
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def aioringbuf_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "aioringbuf", *args]


def run_aioringbuf(*args: str, prefix: tuple[str, ...] | list[str] = (), timeout: float = 60,
                   **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run one subcommand to its end; its output as text (``kw`` overrides)."""
    kw = {"env": child_env(), "cwd": ROOT, **kw}
    return subprocess.run([*prefix, *aioringbuf_argv(*args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def start_aioringbuf(*args: str, prefix: tuple[str, ...] | list[str] = (),
                     **kw: Any) -> subprocess.Popen[bytes]:
    """Start a subcommand with stderr piped (for :func:`wait_stderr`); ``kw``
    overrides the defaults (stdout discarded, this checkout's environment)."""
    kw = {"stdout": subprocess.DEVNULL, "env": child_env(), "cwd": ROOT, **kw}
    return subprocess.Popen([*prefix, *aioringbuf_argv(*args)], stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)


def wait_stderr(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], seen: bytes = b"",
                timeout: float = 30) -> tuple[re.Match[bytes], bytes]:
    """Read ``proc``'s stderr (raw, unbuffered: ``communicate()`` still gets
    the rest) until ``pattern`` matches it; returns the match and all of it."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    what = " ".join(map(str, proc.args))
    deadline = time.monotonic() + timeout
    while not (m := pattern.search(seen)):
        left = deadline - time.monotonic()
        assert left > 0, f"{what}: not ready in {timeout:g} s: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"{what}: exited ({proc.wait()}): {seen!r}"
            seen += chunk
    return m, seen
