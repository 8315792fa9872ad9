"""fleet_events(): the exec events that agents shipped to JetStream, from every host.

::

    async for fe in aioringbuf.exec.fleet_events("nats://broker:4222"):
        print(fe.host, fe.event.pid, fe.event.argv)

An ordered consumer (ephemeral, in stream order, recreated by nats-py if a
message goes missing) reads the stream; ``follow=False`` stops once the
stream's end at the time of reading is reached, for reports and tests.
Each message is the shipper's envelope ``{"host", "key", "event"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import msgspec

from ._errors import AioRingBufError
from ._exec import ExecEvent
from ._ship import DEFAULT_STREAM, SUBJECT_PREFIX, require_nats, subject_token


class FleetConnectError(AioRingBufError, ConnectionError):
    """No NATS server of the list could be reached."""


class FleetEvent(msgspec.Struct, frozen=True):
    """One shipped event: where it came from, its ring key, its stream sequence."""

    host: str
    key: str
    event: ExecEvent
    time_ns: int = 0  # the exec's wall time, ns since the epoch, by its host's clock
    seq: int = 0  # the stream sequence (set by fleet_events)


_decode = msgspec.json.Decoder(FleetEvent).decode


def decode_fleet(data: bytes, seq: int = 0) -> FleetEvent:
    fe = _decode(data)
    return msgspec.structs.replace(fe, seq=seq) if seq else fe


async def fleet_events(
    servers: str | Sequence[str],
    *,
    stream: str = DEFAULT_STREAM,
    hosts: Sequence[str] = (),
    start: Literal["all", "new", "last"] | int = "all",
    follow: bool = True,
    connect: dict[str, Any] | None = None,
    connect_timeout: float = 10.0,
) -> AsyncIterator[FleetEvent]:
    """Shipped exec events in stream order (per host: the order they happened).

    ``servers``: one URL, several separated by commas, or a list. ``hosts``
    restricts to those hosts' subjects. ``start``: the whole stream, only
    new events, from the last one, or (an int) from that stream sequence on.
    ``connect`` is passed to ``nats.connect`` (credentials, TLS);
    :class:`FleetConnectError` if no server answers within ``connect_timeout``
    seconds. Messages that are not shipper envelopes are skipped. asyncio
    only (nats-py).
    """
    nats = require_nats("aioringbuf.fleet_events")
    from nats.js import api

    urls = [u.strip() for u in servers.split(",")] if isinstance(servers, str) else list(servers)
    last: list[BaseException] = []

    async def note(exc: BaseException) -> None:  # instead of nats-py's logged tracebacks
        last[:] = [exc]

    options: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
                               "error_cb": note, **(connect or {})}
    try:
        # Reconnect for ever once reading, but do not wait for ever for the first server.
        nc = await asyncio.wait_for(nats.connect(servers=urls, **options), connect_timeout)
    except Exception as exc:  # a timeout, or nats-py giving up
        why = last[0] if last else exc
        raise FleetConnectError(
            f"no NATS server answered at {', '.join(urls)} within {connect_timeout:g} s "
            f"({str(why) or type(why).__name__})") from None
    try:
        js = nc.jetstream()
        if not follow:
            info = await js.stream_info(stream)
            if info.state.messages == 0:
                return
        subjects = [f"{SUBJECT_PREFIX}.{subject_token(h)}" for h in hosts] or \
            [f"{SUBJECT_PREFIX}.>"]
        def config() -> api.ConsumerConfig:  # one each: nats-py fills it in
            if isinstance(start, int) and not isinstance(start, bool):
                return api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                          opt_start_seq=max(1, start))
            return api.ConsumerConfig(deliver_policy={
                "all": api.DeliverPolicy.ALL, "new": api.DeliverPolicy.NEW,
                "last": api.DeliverPolicy.LAST}[start])
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4096)

        def tagged(i: int) -> Any:
            async def put(msg: Any) -> None:
                await queue.put((i, msg))
            return put

        subs = [await js.subscribe(subj, stream=stream, ordered_consumer=True,
                                   config=config(), cb=tagged(i), pending_msgs_limit=8192)
                for i, subj in enumerate(subjects)]
        caught_up: set[int] = set()
        last = [0] * len(subs)
        try:
            while True:
                i, msg = await queue.get()
                meta = msg.metadata
                if meta.sequence.stream <= last[i]:
                    continue  # seen: an ordered consumer that was reset may deliver it again
                last[i] = meta.sequence.stream
                try:
                    fe = decode_fleet(msg.data, meta.sequence.stream)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    fe = None
                if fe is not None:
                    yield fe
                if not follow and meta.num_pending == 0:
                    caught_up.add(i)
                    if len(caught_up) == len(subs):
                        return
        finally:
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass
    finally:
        try:
            await nc.close()
        except Exception:
            pass
