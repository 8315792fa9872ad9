"""Kernel bytes as text that is always valid Unicode, and back, losslessly.

Names and argv are bytes; most are UTF-8, some are not. ``surrogateescape``
keeps the odd bytes as lone surrogates, which no JSON encoder can write, so
an event holding one could not be sent anywhere as JSON. Here each byte
that is not part of valid UTF-8 becomes the code point U+10FF00 + byte
(U+10FF80..U+10FFFF, the end of Supplementary Private Use Area-B, never
assigned): valid text that any JSON tool carries, and a UTF-8 string is
unchanged. So that this cannot be forged, a genuine character of that
range in the input is stored the same way, one code point per byte of its
UTF-8 encoding; :func:`kernel_bytes` therefore always gives back the exact
bytes, and ``kernel_text(kernel_bytes(s)) == s`` for any ``s`` it made.
"""

from __future__ import annotations

import codecs
import re

BASE = 0x10FF00
FIRST, LAST = BASE + 0x80, BASE + 0xFF
# The UTF-8 encodings of U+10FF80..U+10FFFF: F4 8F BE 80 .. F4 8F BF BF.
_RESERVED_UTF8 = re.compile(rb"(\xf4\x8f[\xbe\xbf][\x80-\xbf])")
_ESCAPED = re.compile(f"[{chr(FIRST)}-{chr(LAST)}]+")


def _escape_bytes(raw: bytes) -> str:
    return "".join(chr(BASE + b) for b in raw)


def _handler(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return _escape_bytes(exc.object[exc.start:exc.end]), exc.end


ERRORS = "aioringbuf-kernel-text"
codecs.register_error(ERRORS, _handler)


def kernel_text(raw: bytes) -> str:
    """``raw`` as text: UTF-8 decoded, every other byte as U+10FF00 + byte."""
    if b"\xf4\x8f" not in raw:
        return raw.decode("utf-8", ERRORS)
    parts = _RESERVED_UTF8.split(raw)
    # Odd parts are genuine U+10FF80..U+10FFFF characters: escaped byte by byte.
    return "".join(_escape_bytes(p) if i % 2 else p.decode("utf-8", ERRORS)
                   for i, p in enumerate(parts))


def has_escapes(text: str) -> bool:
    """True if ``text`` holds bytes that were not UTF-8 (or escaped ones)."""
    return _ESCAPED.search(text) is not None


def kernel_bytes(text: str) -> bytes:
    """The exact bytes :func:`kernel_text` was given."""
    if not _ESCAPED.search(text):
        return text.encode("utf-8")
    out = bytearray()
    pos = 0
    for m in _ESCAPED.finditer(text):
        out += text[pos:m.start()].encode("utf-8")
        out += bytes(ord(c) - BASE for c in m.group())
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)
