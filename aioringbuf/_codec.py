"""C struct layouts <-> msgspec Structs: one compiled decoder per event type.

An :class:`Event` is a ``msgspec.Struct`` whose annotations name C types::

    class Sample(Event):
        seq: U64
        cpu: U32
        comm: CStr[16]

Fields are laid out as a C compiler lays out the same struct (each field at
its natural alignment, the size rounded up to the largest alignment), and
a decoder is generated once per type: one ``struct.unpack_from`` and one
positional constructor call per record. When the C extension is built
(see ``_fast``), the same layout is also handed to it as a field list, and
its native decoder (same results, same errors) is the one used.
"""

from __future__ import annotations

import struct
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import msgspec

from . import _fast
from ._errors import DecodeError, EventLayoutError, RecordSizeError
from ._ring import specialized_walk


@dataclass(frozen=True)
class _Scalar:
    code: str  # struct format character (standard sizes, little-endian)
    size: int


@dataclass(frozen=True)
class _CString:
    length: int


@dataclass(frozen=True)
class _RawBytes:
    length: int


@dataclass(frozen=True)
class _CArray:
    elem: _Scalar
    count: int


@dataclass(frozen=True)
class _Tail:
    kind: type  # bytes, str or list (of str)


U8 = Annotated[int, _Scalar("B", 1)]
U16 = Annotated[int, _Scalar("H", 2)]
U32 = Annotated[int, _Scalar("I", 4)]
U64 = Annotated[int, _Scalar("Q", 8)]
S8 = Annotated[int, _Scalar("b", 1)]
S16 = Annotated[int, _Scalar("h", 2)]
S32 = Annotated[int, _Scalar("i", 4)]
S64 = Annotated[int, _Scalar("q", 8)]


class CStr:
    """``CStr[n]``: ``char[n]``, NUL-terminated, decoded to ``str``.

    Bytes that are not UTF-8 survive as lone surrogates (``surrogateescape``),
    so ``s.encode("utf-8", "surrogateescape")`` gives back the kernel's bytes.
    """

    def __class_getitem__(cls, n: int) -> Any:
        return Annotated[str, _CString(_positive(n, "CStr"))]


class Bytes:
    """``Bytes[n]``: ``unsigned char[n]`` kept as ``bytes``."""

    def __class_getitem__(cls, n: int) -> Any:
        return Annotated[bytes, _RawBytes(_positive(n, "Bytes"))]


class Array:
    """``Array[U32, 4]``: a fixed C array of integers, decoded to a tuple."""

    def __class_getitem__(cls, params: tuple[Any, int]) -> Any:
        elem, n = params
        meta = _meta_of(elem)
        if not isinstance(meta, _Scalar):
            raise EventLayoutError("Array[...] elements must be U8..U64 or S8..S64")
        return Annotated[tuple[int, ...], _CArray(meta, _positive(n, "Array"))]


class Tail:
    """``Tail[bytes]``, ``Tail[str]``, ``Tail[list[str]]``: the variable rest.

    The C flexible array member at the end (``__u8 data[]``): it starts right
    after the last fixed field and runs to the end of the record. ``str``
    stops at the first NUL; ``list[str]`` splits NUL-separated strings.
    """

    def __class_getitem__(cls, kind: Any) -> Any:
        if kind is bytes:
            return Annotated[bytes, _Tail(bytes)]
        if kind is str:
            return Annotated[str, _Tail(str)]
        if typing.get_origin(kind) is list and typing.get_args(kind) == (str,):
            return Annotated[list[str], _Tail(list)]
        raise EventLayoutError("Tail[...] takes bytes, str or list[str]")


def _positive(n: Any, what: str) -> int:
    if not isinstance(n, int) or n <= 0:
        raise EventLayoutError(f"{what}[n] needs a positive integer length, got {n!r}")
    return n


def _meta_of(tp: Any) -> Any:
    if typing.get_origin(tp) is Annotated:
        for m in tp.__metadata__:
            if isinstance(m, (_Scalar, _CString, _RawBytes, _CArray, _Tail)):
                return m
    return None


class Event(msgspec.Struct, gc=False):
    """Base class of events decoded from C records; see the module docstring.

    Subclasses are ordinary msgspec Structs (JSON via ``msgspec.json``),
    untracked by the garbage collector since records cannot form cycles.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The namespace the class statement ran in. Annotations are resolved
        # in sys.modules[cls.__module__], which is the wrong one for a script
        # run by `python -m cProfile`, pdb or runpy: it runs as "__main__" in
        # a namespace of its own while sys.modules["__main__"] is the runner.
        cls.__aioringbuf_namespace__ = sys._getframe(1).f_globals


@dataclass(frozen=True)
class Layout:
    """Where each field of an event type sits in its C struct."""

    offsets: dict[str, int]
    size: int  # sizeof(struct); for a Tail event, the offset of the tail
    align: int
    has_tail: bool


def _str(raw: bytes) -> str:
    return raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def _strs(raw: bytes) -> list[str]:
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "surrogateescape") for p in parts]


Decoder = Callable[[Any, int, int], Any]
# type -> (layout, the pure-Python decoder, the native decoder or None)
_cache: dict[type, tuple[Layout, Decoder, Decoder | None]] = {}
# type -> the arguments of _fastring.Layout for it
_native_args: dict[type, tuple[Any, ...]] = {}


def layout_of(event_type: type) -> Layout:
    """The C layout of ``event_type`` (offsets, sizeof, alignment)."""
    return _compile(event_type)[0]


def decoder_for(event_type: type | None) -> Decoder:
    """The decoder ``(buffer, offset, length) -> event`` for a type (None: bytes).

    The native one when the C extension is in use, else the generated Python one.
    """
    if event_type is None:
        return _decode_bytes
    custom = getattr(event_type, "__aioringbuf_decoder__", None)
    if custom is not None:
        return custom()
    return compiled_decoder(event_type)


def compiled_decoder(event_type: type) -> Decoder:
    """The decoder built from ``event_type``'s fields, past any
    ``__aioringbuf_decoder__``: for a hook that adjusts what the layout decodes."""
    _, py, native = _compile(event_type)
    return native or py


class Decoding(NamedTuple):
    """What a stream needs from the codec for its event type."""

    decode: Decoder
    # The largest record ``decode`` accepts: sizeof for a fixed layout (it
    # accepts no other size), -1 for any length (Tail[...], bytes, custom).
    max_size: int


def check_layout(event_type: type | None, capacity: int, overhead: int, where: str,
                 advice: str) -> Decoding:
    """The decoder for ``event_type``, checked to fit a ring of ``capacity`` bytes.

    ``overhead`` is what the ring adds to each record (its header); a
    layout whose smallest record cannot fit raises EventLayoutError naming
    ``where`` and saying ``advice``. This is the one place layouts are
    checked against rings (RingBuffer and PerfBuffer both ask here).
    """
    for member in getattr(event_type, "__aioringbuf_types__", ()):  # tagged(): each must fit
        check_layout(member, capacity, overhead, where, advice)
    decode = decoder_for(event_type)
    if event_type is None or hasattr(event_type, "__aioringbuf_decoder__"):
        return Decoding(decode, -1)
    layout = layout_of(event_type)
    need = layout.size + overhead
    if need > capacity:
        raise EventLayoutError(
            f"{event_type.__name__} needs {need} bytes per record but {where} holds only "
            f"{capacity}: {advice}"
        )
    return Decoding(decode, -1 if layout.has_tail else layout.size)


def decoders_for(event_type: type) -> tuple[Decoder, Decoder | None]:
    """Both decoders of an Event type: (pure Python, native or None). For tests."""
    _, py, native = _compile(event_type)
    return py, native


def native_decoder(event_type: type, layout_type: Any) -> Decoder:
    """A native decoder built with ``layout_type`` (``_fastring.Layout``) even
    when the package runs pure Python: for tests that compare the two."""
    _compile(event_type)
    return layout_type(*_native_args[event_type])  # type: ignore[no-any-return]


def _decode_bytes(buf: Any, off: int, n: int) -> bytes:
    return bytes(buf[off : off + n])


def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls``: from its module, else from the
    namespace its class statement ran in (see Event.__init_subclass__)."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except NameError:
        namespace = getattr(cls, "__aioringbuf_namespace__", None)
        if namespace is None:
            raise
        return typing.get_type_hints(cls, globalns=namespace, include_extras=True)


def _compile(cls: type) -> tuple[Layout, Decoder, Decoder | None]:
    hit = _cache.get(cls)
    if hit is not None:
        return hit
    if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
        raise EventLayoutError(f"{cls!r} is not an aioringbuf.Event subclass")
    try:
        hints = _type_hints(cls)
    except Exception as exc:
        raise EventLayoutError(f"cannot resolve the annotations of {cls.__name__}: {exc}") from exc
    names = cls.__struct_fields__
    if not names:
        raise EventLayoutError(
            f"{cls.__name__} has no fields; annotate them with U32, CStr[16], ..."
        )

    fmt = ["<"]
    offset = 0
    max_align = 1
    offsets: dict[str, int] = {}
    args: list[str] = []
    spec: list[tuple[str, int, int, str]] = []  # (kind, offset, length, elem) for C
    slot = 0
    tail: _Tail | None = None
    for i, name in enumerate(names):
        meta = _meta_of(hints[name])
        if meta is None:
            raise EventLayoutError(
                f"{cls.__name__}.{name} has no C type: annotate it with U8..U64, S8..S64, "
                "CStr[n], Bytes[n], Array[U32, n] or (last field only) Tail[...]"
            )
        if isinstance(meta, _Tail):
            if i != len(names) - 1:
                raise EventLayoutError(f"{cls.__name__}.{name}: Tail[...] must be the last field")
            tail = meta
            offsets[name] = offset
            continue
        if isinstance(meta, _Scalar):
            size, align, code = meta.size, meta.size, meta.code
        elif isinstance(meta, _CArray):
            size, align = meta.elem.size * meta.count, meta.elem.size
            code = f"{meta.count}{meta.elem.code}"
        else:
            size, align, code = meta.length, 1, f"{meta.length}s"
        pad = -offset % align
        if pad:
            fmt.append(f"{pad}x")
        offset += pad
        offsets[name] = offset
        offset += size
        max_align = max(max_align, align)
        fmt.append(code)
        if isinstance(meta, _CArray):
            args.append(f"v[{slot}:{slot + meta.count}]")
            slot += meta.count
            spec.append(("[", offsets[name], meta.count, meta.elem.code))
        elif isinstance(meta, _CString):
            args.append(f"_str(v[{slot}])")
            slot += 1
            spec.append(("z", offsets[name], meta.length, ""))
        else:
            args.append(f"v[{slot}]")
            slot += 1
            if isinstance(meta, _Scalar):
                spec.append((meta.code, offsets[name], 1, ""))
            else:
                spec.append(("s", offsets[name], meta.length, ""))

    fixed = struct.Struct("".join(fmt))
    name = cls.__name__
    if tail is None:
        size = offset + (-offset % max_align)
        check = f"if n != {size}:\n    raise _size_error(n)"

        def size_error(n: int) -> RecordSizeError:
            return RecordSizeError(
                f"{n}-byte record does not match {name} ({size} bytes in C); check that "
                "the event type mirrors the C struct"
            )
    else:
        size = offset
        check = f"if n < {size}:\n    raise _size_error(n)"

        def size_error(n: int) -> RecordSizeError:
            return RecordSizeError(
                f"{n}-byte record is shorter than the fixed part of {name} ({size} bytes in C)"
            )

        rest = f"buf[off + {size} : off + n]"
        if tail.kind is bytes:
            args.append(f"bytes({rest})")
        elif tail.kind is str:
            args.append(f"_str(bytes({rest}))")
        else:
            args.append(f"_strs(bytes({rest}))")
    # The decoding statements, shared by the decoder and the ring walk made
    # for it (_ring.specialized_walk): buf, off and n in, ev out.
    stmts = [check]
    one_call = tail is None and args == [f"v[{i}]" for i in range(slot)]
    if one_call:
        stmts.append("ev = _cls(*_unpack(buf, off))")  # scalars and Bytes only: no tuple indexing
    else:
        if slot:
            stmts.append("v = _unpack(buf, off)")
        stmts.append(f"ev = _cls({', '.join(args)})")
    src = "def decode(buf, off, n):\n" + "".join(
        "    " + line + "\n" for stmt in stmts for line in stmt.split("\n")) + "    return ev\n"
    namespace: dict[str, Any] = {
        "_unpack": fixed.unpack_from,
        "_cls": cls,
        "_str": _str,
        "_strs": _strs,
        "_size_error": size_error,
    }
    exec(compile(src, f"<aioringbuf decoder for {cls.__qualname__}>", "exec"), namespace)
    py_decode = namespace["decode"]
    # A layout of scalars and Bytes that decodes with one positional call
    # which only stores the values: its ring walk takes runs of records as
    # blocks (see _ring._BLOCK).
    flat = one_call and _cannot_fail(cls)
    py_decode.ring_walk = specialized_walk(stmts, namespace, cls.__qualname__,
                                           fixed.format if flat else None, size)
    layout = Layout(offsets, size, max_align, tail is not None)
    tail_kind = "" if tail is None else tail.kind.__name__  # bytes, str or list
    direct = tuple(names) if _plain_constructor(cls) else None
    _native_args[cls] = (cls, tuple(spec), size, tail_kind, size_error, direct)
    native = None if _fast.Layout is None else _fast.Layout(*_native_args[cls])
    result = (layout, py_decode, native)
    _cache[cls] = result
    return result


def _cannot_fail(cls: type) -> bool:
    """Whether ``cls(*values)`` of the right number of values cannot raise:
    no ``__post_init__``, every field positional."""
    return (getattr(cls, "__post_init__", None) is None
            and tuple(getattr(cls, "__match_args__", ())) == tuple(cls.__struct_fields__))


def _plain_constructor(cls: type) -> bool:
    """Whether ``cls(*values)`` only stores the values: untracked (gc=False),
    no ``__post_init__``, every field positional. Then the native decoder may
    fill the instance's slots itself, which is all msgspec would do."""
    # msgspec leaves keyword-only fields out of __match_args__. Unlike
    # inspect.signature(), this needs no annotations resolved.
    return not cls.__struct_config__.gc and _cannot_fail(cls)


def decode(event_type: type | None, record: bytes) -> Any:
    """Decode one record (e.g. from a test) with the type's compiled decoder."""
    try:
        return decoder_for(event_type)(record, 0, len(record))
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode a {len(record)}-byte record: {exc}") from exc
