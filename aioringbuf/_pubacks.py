"""JetStream's replies to publishes, read without nats-py's JetStream layer.

The shipper publishes with nats-py's core ``publish`` and a reply subject
of its own (see ``_ship``); what comes back on it is one of: a publish ack
``{"stream", "seq", "duplicate"}``, an API error ``{"error": {...}}``, or
an empty message with status 503 when no stream takes the subject.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode = msgspec.json.Decoder(PubAck).decode


def read_reply(msg: Any, subject: str) -> PubAck | str:
    """The ack in ``msg`` (a nats-py Msg), or why it is not one, as one line."""
    hdr = msg.headers
    if not msg.data and hdr and hdr.get("Status") == "503":
        return f"no JetStream stream answers for {subject} (no responders)"
    try:
        ack = _decode(msg.data)
    except msgspec.DecodeError as exc:
        return f"a publish reply JetStream would not send: {exc}"
    if ack.error is not None:
        err = ack.error
        return (f"JetStream refused a publish: {err.description} "
                f"(code {err.code}, err_code {err.err_code})")
    return ack
