"""Run a snippet as an unprivileged user holding only chosen capabilities."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

NOBODY = ["--reuid=65534", "--regid=65534", "--clear-groups"]


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
