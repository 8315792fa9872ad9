"""Kernel bytes as valid Unicode and back, and the one JSON form of ExecEvent and ExitEvent."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aioringbuf
from aioringbuf._exec import _EXEC_OR_EXIT, _HEADER, HEADER_SIZE, KIND_EXEC, KIND_EXIT, _decode
from aioringbuf.exec import ExecEvent, ExitEvent, kernel_bytes, kernel_text, printable, terminal


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_round_trip_through_valid_unicode(raw: bytes) -> None:
    text = kernel_text(raw)
    text.encode("utf-8")  # never a lone surrogate
    assert kernel_bytes(text) == raw
    assert kernel_text(kernel_bytes(text)) == text


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=32))
def test_utf8_text_is_unchanged_unless_it_uses_the_escape_range(s: str) -> None:
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are not UTF-8
        return
    if any(0x10FF80 <= ord(c) <= 0x10FFFF for c in s):
        assert kernel_text(raw) != s
    else:
        assert kernel_text(raw) == s
    assert kernel_bytes(kernel_text(raw)) == raw


def test_bad_bytes_become_the_escape_range_and_a_backslash_stays_a_backslash() -> None:
    assert kernel_text(b"caf\xe9") == "caf\U0010ffe9"
    assert kernel_text(b"caf\\xe9") == "caf\\xe9"
    assert kernel_text(b"caf\xc3\xa9") == "café"
    assert kernel_text(b"\xff\xfe") == "\U0010ffff\U0010fffe"
    assert kernel_text(b"\xe2\x82") == "\U0010ffe2\U0010ff82"  # a truncated euro sign


def test_a_genuine_escape_range_character_cannot_forge_a_byte() -> None:
    genuine = "\U0010ffff".encode()  # F4 8F BF BF: valid UTF-8
    text = kernel_text(b"x" + genuine)
    assert text == "x\U0010fff4\U0010ff8f\U0010ffbf\U0010ffbf"
    assert kernel_bytes(text) == b"x" + genuine
    assert kernel_text(b"\xff") != kernel_text(genuine)


def test_printable_and_terminal_show_escaped_bytes_as_hex() -> None:
    text = kernel_text(b"bad-\xff\\x")
    assert printable(text) == "bad-\\xff\\x"
    assert terminal(text) == "bad-\\xff\\\\x"


def record(comm: bytes, filename: bytes, argv: list[bytes], ret: int = 0) -> bytes:
    fn = filename + b"\0"
    args = b"".join(a + b"\0" for a in argv)
    header = _HEADER.pack(KIND_EXEC, 0, 123, 0, 0, 0, 0, 0, 10, 10, 1, 0, 0, 0xFFFFFFFF,
                          ret, -100, 0, len(argv), len(fn), len(args), comm, b"bash")
    assert len(header) == HEADER_SIZE
    return header + fn + args


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=15), st.binary(max_size=40),
       st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), max_size=5))
def test_every_exec_event_json_round_trips(comm: bytes, filename: bytes,
                                           argv: list[bytes]) -> None:
    comm, filename = comm.replace(b"\0", b"."), filename.replace(b"\0", b".")
    data = record(comm, filename, argv, ret=-2)
    ev = _decode(data, 0, len(data))
    assert kernel_bytes(ev.comm) == comm
    assert kernel_bytes(ev.filename) == filename
    assert [kernel_bytes(a) for a in ev.argv] == argv
    encoded = msgspec.json.encode(ev)
    assert msgspec.json.decode(encoded, type=ExecEvent) == ev
    assert msgspec.json.decode(encoded) == msgspec.to_builtins(ev)


def test_the_surrogateescape_form_does_not_encode_which_is_why() -> None:
    ev = msgspec.structs.replace(
        _decode(record(b"x", b"/x", [b"a"]), 0, HEADER_SIZE + 5),
        filename=b"\xff".decode("utf-8", "surrogateescape"))
    with pytest.raises(UnicodeEncodeError):
        msgspec.json.encode(ev)


def exit_record(comm: bytes) -> bytes:
    """struct exit_event (bpf/exec.bpf.c, 72 bytes) for a process named ``comm``."""
    return struct.pack("<IIQQQIIIiI16s4x", KIND_EXIT, 1, 5, 6, 7, 8, 9, 0, 3, 0, comm)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=15).map(lambda b: b.replace(b"\0", b".")))
def test_every_exit_event_json_round_trips(comm: bytes) -> None:
    """The ring's decoder (exec | exit, C or Python by the path) and ExitEvent's
    own both keep comm as kernel text: bytes back exactly, JSON both ways."""
    data = exit_record(comm)
    for ev in (aioringbuf.types.decode(ExitEvent, data),
               aioringbuf.types.decode(_EXEC_OR_EXIT, data)):
        assert isinstance(ev, ExitEvent)
        assert ev.comm == kernel_text(comm) and kernel_bytes(ev.comm) == comm
        encoded = msgspec.json.encode(ev)
        assert msgspec.json.decode(encoded, type=ExitEvent) == ev
        assert msgspec.json.decode(encoded) == msgspec.to_builtins(ev)


def test_an_exit_comm_that_is_not_utf8_is_escaped_not_surrogates() -> None:
    ev = aioringbuf.types.decode(ExitEvent, exit_record(b"\xff\xfe-x\xf4\x8f\xbf\xbf"))
    assert ev.comm == "\U0010ffff\U0010fffe-x\U0010fff4\U0010ff8f\U0010ffbf\U0010ffbf"
    assert (ev.pid, ev.ppid, ev.exit_code, ev.since_exec) == (8, 9, 3, True)
