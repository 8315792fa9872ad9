"""examples/web/app.py as a user runs it: a process, its log in a file, real signals.

Shared by test_web.py and test_web_signals.py, with the programs the tests
exec (names nobody else uses, so that a filter finds exactly them).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "web" / "app.py"


class WebServer:
    """``python examples/web/app.py --port 0 ARGS``, ready once its probes are attached."""

    def __init__(self, log: pathlib.Path, *args: str) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), "--port", "0", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
            )
        try:
            deadline = time.monotonic() + 60
            while not (m := re.search(r"serving (http://[^/\s]+)/", self.text())):
                assert self.proc.poll() is None, f"server exited: {self.text()}"
                assert time.monotonic() < deadline, f"server not ready: {self.text()}"
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        self.url = m.group(1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"server exited: {self.text()}"
            assert time.monotonic() < deadline, f"never logged {needle!r}: {self.text()}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> str:
        """Send ``sig`` (SIGINT is Ctrl-C) unless it has exited; it must exit 0, quietly."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> str:
        """Until it exits: status 0, no traceback or error in the log. Returns the log."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"server did not exit within {timeout} s:\n{self.text()}")
        log = self.text()
        assert self.proc.returncode == 0, log
        assert "Traceback" not in log and "ERROR" not in log, log
        return log

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def named_program(directory: pathlib.Path, prefix: str = "aiorb") -> tuple[str, str]:
    """A symlink to /bin/true whose name (and so comm) no other exec has."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"  # at most 15 characters: all of it is comm
    path = directory / name
    path.symlink_to("/bin/true")
    return name, str(path)


def run_all(argvs: list[list[str]]) -> None:
    for argv in argvs:  # one after another: the order of the events is defined
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
