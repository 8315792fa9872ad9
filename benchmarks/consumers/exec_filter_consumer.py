"""exec_filter.py's consumer: ``async for ev in exec_events(**FILTERS)`` in its own process.

Started as ``exec_filter_consumer.py CPU FILTERS_JSON`` (FILTERS_JSON: the
keyword arguments of exec_events(), e.g. ``{"uid": 4000000000}``). It pins
itself to CPU, opens the stream (loads and attaches exec.bpf.o), prints
``ready`` and consumes. Every ``report`` line on stdin gets one JSON line
back: events so far and this process's CPU seconds (getrusage, user +
system, all threads). End of stdin closes the stream and exits.
"""

from __future__ import annotations

import json
import os
import resource
import sys

import anyio

import aioringbuf


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def main() -> None:
    os.sched_setaffinity(0, {int(sys.argv[1])})
    filters = json.loads(sys.argv[2])
    count = 0

    async def commands(scope: anyio.CancelScope) -> None:
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            if line.strip() == "report":
                print(json.dumps({"events": count, "cpu_s": cpu_s()}), flush=True)
        scope.cancel()  # end of stdin: the harness is done with this row

    async with aioringbuf.exec_events(**filters) as events, anyio.create_task_group() as tg:
        tg.start_soon(commands, tg.cancel_scope)
        print("ready", flush=True)
        async for _ in events:
            count += 1


if __name__ == "__main__":
    anyio.run(main)
