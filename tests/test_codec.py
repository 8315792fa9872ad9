"""The codec on its own: C layout rules and decoding, no kernel needed."""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess
import sys

import msgspec
import pytest

import aioringbuf
from aioringbuf import S8, S16, U8, U16, U32, U64, Array, Bytes, CStr, Event, Tail
from aioringbuf.types import layout_of


class Mixed(Event):
    a: U8
    b: U64
    c: U16
    name: CStr[3]


class WithTail(Event):
    kind: U32
    n: U16
    data: Tail[bytes]


class Strings(Event):
    count: U8
    items: Tail[list[str]]


def test_fields_sit_where_a_c_compiler_puts_them() -> None:
    lay = layout_of(Mixed)
    assert lay.offsets == {"a": 0, "b": 8, "c": 16, "name": 18}
    assert (lay.size, lay.align) == (24, 8)  # 21 rounded up to the u64 alignment


def test_tail_starts_right_after_the_fixed_fields() -> None:
    lay = layout_of(WithTail)
    assert lay.offsets["data"] == 6 and lay.size == 6 and lay.has_tail


def test_decode_fixed_record() -> None:
    raw = struct.pack("<B7xQH3s3x", 200, 2**64 - 1, 513, b"ok\0")
    assert aioringbuf.types.decode(Mixed, raw) == Mixed(200, 2**64 - 1, 513, "ok")


def test_cstr_stops_at_nul_and_survives_invalid_utf8() -> None:
    raw = struct.pack("<B7xQH3s3x", 0, 0, 0, b"\xff\xfeZ")
    ev = aioringbuf.types.decode(Mixed, raw)
    assert ev.name.encode("utf-8", "surrogateescape") == b"\xff\xfeZ"
    raw = struct.pack("<B7xQH3s3x", 0, 0, 0, b"a\0b")
    assert aioringbuf.types.decode(Mixed, raw).name == "a"


def test_tail_bytes_and_strings() -> None:
    assert aioringbuf.types.decode(WithTail, struct.pack("<IH", 1, 3) + b"xyz").data == b"xyz"
    assert aioringbuf.types.decode(WithTail, struct.pack("<IH", 1, 0)).data == b""
    ev = aioringbuf.types.decode(Strings, b"\x03a\0\0b\xff\0")
    assert ev.items[0] == "a" and ev.items[1] == "" and ev.items[2].startswith("b")


def test_arrays_signed_and_bytes() -> None:
    class T(Event):
        s: S8
        h: S16
        arr: Array[U32, 2]
        raw: Bytes[2]

    lay = layout_of(T)
    assert lay.offsets == {"s": 0, "h": 2, "arr": 4, "raw": 12} and lay.size == 16
    ev = aioringbuf.types.decode(T, struct.pack("<bxhII2s2x", -1, -2, 7, 8, b"\0\1"))
    assert ev == T(-1, -2, (7, 8), b"\0\1")


@pytest.mark.parametrize("size", [0, 23, 25, 64])
def test_record_of_the_wrong_size_is_a_typed_error(size: int) -> None:
    with pytest.raises(aioringbuf.RecordSizeError, match=f"{size}-byte record"):
        aioringbuf.types.decode(Mixed, bytes(size))


def test_short_tail_record_is_a_typed_error() -> None:
    with pytest.raises(aioringbuf.RecordSizeError, match="shorter"):
        aioringbuf.types.decode(WithTail, b"\0\0\0")


def test_bad_annotations_are_refused_with_a_hint() -> None:
    class NoCType(Event):
        x: int

    with pytest.raises(aioringbuf.EventLayoutError, match=r"U8\.\.U64"):
        layout_of(NoCType)

    class TailNotLast(Event):
        t: Tail[bytes]
        x: U8

    with pytest.raises(aioringbuf.EventLayoutError, match="last field"):
        layout_of(TailNotLast)
    with pytest.raises(aioringbuf.EventLayoutError):
        CStr[0]


def test_events_are_msgspec_structs() -> None:
    ev = Mixed(1, 2, 3, "hi")
    assert msgspec.json.decode(msgspec.json.encode(ev), type=Mixed) == ev


SCRIPT = """\
from __future__ import annotations
import aioringbuf
from aioringbuf import U32, U64, Event

class Rec(Event):
    seq: U64
    pid: U32

print(aioringbuf.types.decode(Rec, (5).to_bytes(8, "little") + (7).to_bytes(8, "little")))
"""


@pytest.mark.parametrize("runner", [[], ["-m", "cProfile", "-o", "/dev/null"]])
def test_event_types_of_a_script_run_by_a_profiler_resolve(tmp_path, runner) -> None:
    """`python -m cProfile script.py` runs the script as "__main__" in a
    namespace that is not sys.modules["__main__"]: its annotations still
    resolve, from the namespace the class statement ran in."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    root = str(pathlib.Path(aioringbuf.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, *runner, str(script)], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "Rec(seq=5, pid=7)"
