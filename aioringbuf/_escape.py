"""Text from traced processes, made safe to show: for JSON and for a terminal.

A process chooses its name and argv freely, bytes 0x01-0xff included. In
a terminal, ESC starts a control sequence (clear the screen, set the
window title, move the cursor), CR and LF forge whole rows, and bidi or
zero-width characters hide text. :func:`terminal` writes each of them as
a visible escape; :func:`printable` does the minimum JSON needs (valid
UTF-8), since a JSON encoder escapes control characters itself.
"""

from __future__ import annotations

from ._kerneltext import BASE as ESCAPE_BASE
from ._kerneltext import FIRST as ESCAPE_FIRST
from ._kerneltext import LAST as ESCAPE_LAST
from ._kerneltext import has_escapes, kernel_bytes

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def printable(s: str) -> str:
    """Kernel text with its non-UTF-8 bytes shown as backslash escapes (0xff ->
    ``\\xff``), whether they are held as U+10FF80..U+10FFFF (exec events, see
    :func:`aioringbuf.exec.kernel_text`) or as lone surrogates (``surrogateescape``,
    other events). A display form: ``"caf\\xe9"`` and a real backslash look
    alike, so JSON carries the lossless text itself. Everything else is
    unchanged: use :func:`terminal` for text that goes to a terminal.
    """
    if has_escapes(s):
        s = kernel_bytes(s).decode("utf-8", "surrogateescape")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _escape_char(c: str) -> str:
    named = _NAMED.get(c)
    if named is not None:
        return named
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if ESCAPE_FIRST <= code <= ESCAPE_LAST:  # the same, as kernel_text holds it
        return f"\\x{code - ESCAPE_BASE:02x}"
    if code < 0x80:  # C0 controls and DEL
        return f"\\x{code:02x}"
    if code <= 0xFFFF:  # C1 controls, bidi and zero-width format characters, ...
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal(s: str) -> str:
    """``s`` with nothing a terminal would act on: every character that is not
    printable (``str.isprintable``: C0 and C1 controls, DEL, line and paragraph
    separators, format characters such as bidi overrides, unassigned code
    points) and every byte that was not UTF-8 becomes a visible escape
    (``\\x1b``, ``\\n``, ``\\u0085``, ``\\u202e``, ``\\xff``); a backslash
    becomes ``\\\\`` so that an escape cannot be forged. Spaces stay."""
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in s)
