"""Reading JetStream's publish replies (the shipper's own ack path)."""

from __future__ import annotations

import pytest

from aioringbuf._pubacks import PubAck, read_reply

Msg = pytest.importorskip("nats.aio.msg").Msg


def reply(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.1", data=data, headers=headers)


def test_an_ack_and_a_duplicate() -> None:
    assert read_reply(reply(b'{"stream":"S","seq":7}'), "a.b") == PubAck("S", 7, False)
    ack = read_reply(reply(b'{"stream":"S","seq":7,"duplicate":true,"domain":"x"}'), "a.b")
    assert isinstance(ack, PubAck) and ack.duplicate  # unknown members are ignored


def test_refusals_say_why_in_one_line() -> None:
    err = b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}'
    assert read_reply(reply(err), "a.b") == (
        "JetStream refused a publish: maximum messages exceeded (code 503, err_code 10077)")
    assert read_reply(reply(b"", {"Status": "503"}), "a.b") == (
        "no JetStream stream answers for a.b (no responders)")
    for junk in (b"", b"not json", b'{"seq":"x"}', b"\xff" * 10):
        why = read_reply(reply(junk), "a.b")
        assert isinstance(why, str) and why.startswith("a publish reply JetStream would not send")
        assert "\n" not in why


def test_a_hostile_refusal_reaches_the_notice_escaped() -> None:
    from aioringbuf._ship import _reason

    err = b'{"error":{"code":1,"description":"\\u001b[2J\\u001b]0;owned\\u0007 \\u202e ok"}}'
    why = read_reply(reply(err), "a.b")
    assert isinstance(why, str) and "\x1b" in why  # the parsed text, as sent
    line = _reason(RuntimeError(why))
    assert line.isprintable() and "\x1b" not in line and "\u202e" not in line
    assert "\\x1b[2J" in line and "\\u202e ok" in line
