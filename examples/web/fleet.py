"""``--nats URL``: the fleet's exec events (what ``aioringbuf ship`` agents publish) as the
hub's source, instead of this machine's ring.

At start-up it connects once, to fail in one line when no broker answers or
the stream does not exist yet, and to note the stream's end: the page shows
the events shipped from then on (``fleet_events(start=seq)``), like the
local mode shows the execs from its start. Each event is a ``FleetEvent``
(host, ring key, the ExecEvent); the page gets the event's JSON with a
``host`` member. Credentials come from the environment, as for
``aioringbuf ship`` (never from argv): ``$NATS_CREDS`` (a .creds file),
``$NATS_USER`` and ``$NATS_PASSWORD``, ``$NATS_TOKEN``. Needs ``nats-py``
(``pip install 'aioringbuf[nats]'``), but neither root nor BPF: nothing is
loaded into this machine's kernel.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from aioringbuf._fleet import FleetConnectError, FleetEvent, fleet_events
from aioringbuf._ship import DEFAULT_STREAM, require_nats


class FleetStats(msgspec.Struct, frozen=True, kw_only=True):
    """What /stats and /metrics say of the source: events read from the stream.

    The ring's counters (kernel drops, fill) are the agents': read them from
    their own ``--metrics-port``.
    """

    delivered: int
    kernel_drops: int | None = None
    queue_drops: int = 0
    decode_errors: int = 0
    discarded: int = 0
    avail_bytes: int = 0
    ring_size: int = 0
    queue_len: int = 0
    queue_peak: int = 0


class FleetSource:
    """An async iterator of FleetEvents with ``stats()``: what a Broadcast reads."""

    name = "fleet"

    def __init__(self, urls: list[str], stream: str = DEFAULT_STREAM) -> None:
        self.urls = urls
        self.stream = stream
        self.first = 1
        self._delivered = 0
        env = os.environ.get
        self.connect: dict[str, Any] = {k: v for k, v in (
            ("user_credentials", env("NATS_CREDS")), ("user", env("NATS_USER")),
            ("password", env("NATS_PASSWORD")), ("token", env("NATS_TOKEN"))) if v}

    async def open(self, timeout: float = 10.0) -> None:
        nats = require_nats("examples/web/app.py --nats")
        from nats.js.errors import NotFoundError

        async def quiet(exc: BaseException) -> None:
            pass  # reported below, in one line

        where = ", ".join(self.urls)
        try:
            nc = await asyncio.wait_for(
                nats.connect(servers=self.urls, max_reconnect_attempts=0, error_cb=quiet,
                             allow_reconnect=False, **self.connect), timeout)
        except Exception as exc:
            raise FleetConnectError(f"no NATS server answered at {where} within {timeout:g} s "
                                    f"({str(exc) or type(exc).__name__})") from None
        try:
            info = await nc.jetstream().stream_info(self.stream)
            self.first = info.state.last_seq + 1
        except NotFoundError:
            raise FleetConnectError(
                f"{where} has no stream {self.stream}: start an agent there first "
                "(aioringbuf ship --nats URL), which creates it") from None
        finally:
            await nc.close()

    def __aiter__(self) -> AsyncIterator[FleetEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[FleetEvent]:
        async for fe in fleet_events(self.urls, stream=self.stream, start=self.first,
                                     connect=self.connect):
            self._delivered += 1
            yield fe

    def stats(self) -> FleetStats:
        return FleetStats(delivered=self._delivered)


def exec_of(item: Any) -> Any:
    """The ExecEvent of a FleetEvent (for the client's filter)."""
    return item.event
