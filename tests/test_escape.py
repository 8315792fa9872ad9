"""aioringbuf.exec.terminal: nothing a traced process chooses reaches a terminal as a control."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from aioringbuf.exec import printable, terminal


def test_controls_become_visible_escapes() -> None:
    assert terminal("\x1b]0;owned\x07") == "\\x1b]0;owned\\x07"
    assert terminal("a\rb\nc\td") == "a\\rb\\nc\\td"
    assert terminal("\x7f\x00") == "\\x7f\\x00"
    assert terminal("\x85\x9b") == "\\u0085\\u009b"  # C1: NEL, CSI
    assert terminal("safe\u202eexe.txt") == "safe\\u202eexe.txt"  # bidi override
    assert terminal("a\u2028b\u200bc") == "a\\u2028b\\u200bc"
    assert terminal("plain text, café, 東京") == "plain text, café, 東京"


def test_bytes_that_are_not_utf8_and_backslashes_cannot_be_confused() -> None:
    raw = b"\xff\xc2\x85".decode("utf-8", "surrogateescape")  # a bad byte, then a real NEL
    assert terminal(raw) == "\\xff\\u0085"
    assert terminal("\\xff") == "\\\\xff"  # typed, not a byte: visibly different


def test_printable_for_json_only_fixes_utf8() -> None:
    raw = b"a\x1b\xff".decode("utf-8", "surrogateescape")
    assert printable(raw) == "a\x1b\\xff"  # the JSON encoder escapes \x1b itself


@given(st.text())
def test_no_output_character_is_a_control(s: str) -> None:
    out = terminal(s)
    assert out.isprintable()
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp") for c in out)


@given(st.binary())
def test_no_byte_sequence_survives_as_a_control(raw: bytes) -> None:
    out = terminal(raw.decode("utf-8", "surrogateescape"))
    assert out.isprintable()
    out.encode("utf-8")  # valid UTF-8 whatever came in
