"""Run `aioringbuf ship` agents as real processes and read back what reached JetStream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time

from cliproc import aioringbuf_argv

from aioringbuf._fleet import FleetEvent, fleet_events

# The ring must hold every exec of the machine while an agent restarts (a
# second or so); other tests on the machine may exec thousands per second.
RING_SIZE = 8 << 20


class Agent:
    """One `python -m aioringbuf ship` process; its stderr goes to a file."""

    def __init__(self, urls: list[str], pin_dir: str, host: str, *extra: str) -> None:
        self.argv = aioringbuf_argv("ship", "--nats", ",".join(urls), "--pin-dir", pin_dir,
                                    "--host", host, "--ring-size", str(RING_SIZE), *extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="aiorb-ship-", suffix=".log", delete=False)
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        self.log.write(f"--- run {self.runs}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL)

    def wait_attached(self, timeout: float = 30.0) -> None:
        """Until this run said it made or reattached to the pinned programs."""
        deadline = time.monotonic() + timeout
        want = self.runs
        while time.monotonic() < deadline:
            text = self.stderr()
            if text.split(f"--- run {want}\n", 1)[-1].count("pinned exec programs"):
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {text}")
            time.sleep(0.05)
        raise TimeoutError(f"agent did not attach: {self.stderr()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM: a clean stop; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def stderr(self) -> str:
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)


def read_stream(urls: list[str], host: str | None = None) -> list[FleetEvent]:
    async def main() -> list[FleetEvent]:
        out = []
        async for fe in fleet_events(urls, hosts=[host] if host else (), follow=False):
            out.append(fe)
        return out
    return asyncio.run(main())


def marked(events: list[FleetEvent], mark: str) -> list[int]:
    """The indices of marked execs (`/bin/true MARK i`), in stream order."""
    return [int(fe.event.argv[2]) for fe in events
            if len(fe.event.argv) == 3 and fe.event.argv[1] == mark]


def wait_for_marked(urls: list[str], host: str, mark: str, n: int,
                    timeout: float = 40.0) -> list[FleetEvent]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            events = read_stream(urls, host)
        except Exception:
            events = []
        got = marked(events, mark)
        # Shipping keeps order: once the last one is in, all that will be are.
        if len(got) >= n or (got and got[-1] == n - 1) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def exec_marked(mark: str, indices: range) -> None:
    for i in indices:
        subprocess.run(["/bin/true", mark, str(i)], check=True)
