"""Several event types on one ring, told apart by a leading tag.

A BPF program that writes more than one kind of record to a ring starts
each with a u32 tag. Each event type declares its tag value as
``__aioringbuf_tag__`` and its first field is that u32 (at offset 0);
:func:`tagged` builds the record type whose decoder reads the tag and hands
the record to that type's own decoder (compiled, with its layout checks and
the C fast path, or its custom ``__aioringbuf_decoder__``)::

    class Open(Event):
        __aioringbuf_tag__ = 1
        kind: U32
        ...

    RingBuffer(fd, Open | Close)          # yields Open and Close events
    RingBuffer(fd, tagged(Open, Close))   # the same, spelled out

:func:`record_type` is where the sources turn a union annotation into that
tagged type.
"""

from __future__ import annotations

import functools
import struct
import types
import typing
from collections.abc import Callable
from typing import Any

from ._codec import decoder_for, layout_of
from ._errors import DecodeError, EventLayoutError, RecordSizeError

_TAG = struct.Struct("<I")


def tag_of(event_type: type) -> int:
    """The tag an event type declares; EventLayoutError if it has none usable."""
    tag = getattr(event_type, "__aioringbuf_tag__", None)
    name = getattr(event_type, "__name__", repr(event_type))
    if not isinstance(tag, int) or isinstance(tag, bool) or not 0 <= tag < 2**32:
        raise EventLayoutError(
            f"{name} declares no tag: give it a class attribute __aioringbuf_tag__ = N "
            "(a u32) and a leading U32 field that the BPF program sets to N"
        )
    if not hasattr(event_type, "__aioringbuf_decoder__"):
        lay = layout_of(event_type)
        first = min(lay.offsets, key=lay.offsets.__getitem__, default=None)
        later = sorted(lay.offsets.values())[1:2] or [lay.size]
        if first is None or lay.offsets[first] != 0 or later[0] < 4:
            raise EventLayoutError(f"{name}'s first field must be its u32 tag (at offset 0)")
    return tag


def tagged(*types: type) -> type:
    """The record type "one of ``types``", dispatched on the leading u32 tag."""
    if len(types) < 2:
        raise TypeError("tagged() needs at least two event types")
    table: dict[int, Callable[[Any, int, int], Any]] = {}
    for t in types:
        tag = tag_of(t)
        if tag in table:
            raise EventLayoutError(f"two event types declare tag {tag}")
        table[tag] = decoder_for(t)
    names = " | ".join(t.__name__ for t in types)
    unpack = _TAG.unpack_from

    def decode(buf: Any, off: int, n: int) -> Any:
        if n < 4:
            raise RecordSizeError(f"{n}-byte record has no room for a u32 tag ({names})")
        (tag,) = unpack(buf, off)
        try:
            return table[tag](buf, off, n)
        except KeyError:
            raise DecodeError(f"record tag {tag} is none of {names}'s "
                              f"({', '.join(map(str, sorted(table)))})") from None

    return type(f"Tagged[{names}]", (), {
        "__doc__": f"A record that is one of {names}, by its leading u32 tag.",
        "__aioringbuf_types__": types,
        "__aioringbuf_decoder__": classmethod(lambda cls: decode),
    })


def record_type(event_type: Any) -> Any:
    """``A | B`` (or ``typing.Union[A, B]``) as :func:`tagged` ``(A, B)``;
    any other event type as it is."""
    if isinstance(event_type, types.UnionType) or typing.get_origin(event_type) is typing.Union:
        return _tagged_once(typing.get_args(event_type))
    return event_type


@functools.lru_cache(maxsize=64)
def _tagged_once(members: tuple[type, ...]) -> type:
    """One tagged type per union, however many streams use it."""
    return tagged(*members)
