"""The CLI's stdout, written from a thread of its own: a stalled reader never blocks signals.

A reader that stops reading (a pager left open, a log shipper that hangs)
fills the pipe, and the next ``write()`` blocks. Done on the event loop's
thread, that write also blocks the loop, so SIGINT and SIGTERM (handled
there) do nothing until the reader goes away. Here the loop only appends
lines to a bounded buffer; a daemon thread does the blocking writes. When
the buffer is full, lines are dropped and counted (``dropped``), as the
kernel ring counts what it could not hold; at exit, whatever the thread
could not write within a short grace is counted too, and the process
exits regardless of a write still stuck in the kernel.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable

MAX_PENDING = 4 << 20  # bytes of lines waiting for a slow reader before lines are dropped


class LineWriter:
    """Append-only lines to ``fd``, written by a daemon thread in order.

    :meth:`write` never blocks. ``on_broken`` is called (in the writer
    thread) once if the reader has gone (EPIPE): the caller's cue to stop.
    """

    def __init__(self, fd: int, *, max_pending: int = MAX_PENDING,
                 on_broken: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._max_pending = max_pending
        self._on_broken = on_broken
        self._lines: collections.deque[bytes] = collections.deque()
        self._pending = 0  # bytes in _lines plus the batch being written
        self._cond = threading.Condition()
        self._closing = False
        self.broken = False
        self.dropped = 0  # lines never written: buffer full, reader gone, or exit
        self.written = 0
        self._in_flight = 0  # lines in the write the thread is doing now
        self._thread = threading.Thread(target=self._run, name="aioringbuf stdout", daemon=True)
        self._thread.start()

    def write(self, line: str) -> bool:
        """Queue ``line`` plus a newline; False (and counted) if it was dropped."""
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        with self._cond:
            if self.broken or self._closing or self._pending + len(data) > self._max_pending:
                self.dropped += 1
                return False
            self._lines.append(data)
            self._pending += len(data)
            self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closing:
                    self._cond.wait()
                if not self._lines:
                    return
                batch = list(self._lines)
                self._lines.clear()
                self._in_flight = len(batch)
            try:
                self._write_all(b"".join(batch))
            except OSError:  # EPIPE (the reader left) or any other end of the output
                with self._cond:
                    self.broken = True
                    self.dropped += len(batch) + len(self._lines)
                    self._in_flight = 0
                    self._lines.clear()
                    self._pending = 0
                    self._cond.notify_all()
                if self._on_broken is not None:
                    self._on_broken()
                return
            with self._cond:
                self.written += len(batch)
                self._in_flight = 0
                self._pending -= sum(map(len, batch))
                self._cond.notify_all()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self, timeout: float) -> None:
        """Let the thread write what is queued for at most ``timeout`` seconds.

        Lines still unwritten after that are counted in ``dropped``; a write
        still blocked in the kernel is abandoned (the thread is a daemon).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                # The batch inside the stuck write may be partly written: it
                # counts as not written, like the lines queued behind it.
                self.dropped += len(self._lines) + self._in_flight
                self._lines.clear()
                self._in_flight = 0
