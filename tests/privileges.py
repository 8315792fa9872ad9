"""Run a snippet as an unprivileged user holding only chosen capabilities.

uid 65534 must be able to reach the interpreter, the venv and the checkout:
a clone in a private directory (``mktemp -d`` makes it 0700) would fail
those runs with "No module named aioringbuf". :func:`reachable_by_nobody`
adds the search (x) bit to the directories on the way, for the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]
AS_NOBODY = ["setpriv", *NOBODY]  # a command prefix


def reachable_by_nobody(paths: list[str]) -> list[tuple[str, int]]:
    """Give "others" search permission on every directory above ``paths``.

    Returns (directory, old mode) for each one changed, so that the caller
    can put them back; only the x bit is added, nothing becomes readable.
    """
    changed: list[tuple[str, int]] = []
    seen: set[str] = set()
    for path in paths:
        d = os.path.dirname(os.path.realpath(path))
        while d not in seen:
            seen.add(d)
            mode = os.stat(d).st_mode
            if not mode & 0o001:
                os.chmod(d, (mode & 0o7777) | 0o001)
                changed.append((d, mode & 0o7777))
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return changed


def run_with_caps(code: str, caps: tuple[str, ...] = (), files: tuple[str, ...] = ()):
    """Run ``code`` as uid 65534 with exactly ``caps`` (e.g. "bpf", "perfmon").

    ``files`` are copied into a world-readable directory that becomes the
    working directory, so the snippet can open them by base name.
    """
    spec = ",".join(f"+{c}" for c in caps)
    if caps:
        capargs = [f"--inh-caps=-all,{spec}", f"--ambient-caps={spec}",
                   f"--bounding-set=-all,{spec}"]
    else:
        capargs = ["--inh-caps=-all", "--bounding-set=-all"]
    work = tempfile.mkdtemp(prefix="aioringbuf-priv-")
    try:
        os.chmod(work, 0o755)
        for f in files:
            shutil.copy(f, work)
            os.chmod(os.path.join(work, os.path.basename(f)), 0o644)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.run(
            ["setpriv", *NOBODY, *capargs, sys.executable, "-c", code],
            capture_output=True, text=True, env=env, cwd=work, timeout=60,
        )
    finally:
        shutil.rmtree(work)
