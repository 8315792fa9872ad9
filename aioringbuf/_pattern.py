"""Patterns from strangers, matched in time linear in the text: RE2 behind one small type.

Python's ``re`` backtracks: ``(a+)+$`` against 30 ``a`` and a ``!`` takes
minutes, and ``(.|.|.|.)*X`` is exponential on any text without an ``X``.
Here both sides can be hostile: the pattern comes from a query string or
a command-line option, the text from whoever execs a program (its name
and argv). RE2 (``google-re2``) runs every pattern in time linear in the
text and refuses what would need backtracking (backreferences,
lookaround), so no pattern can stall the event loop that matches it.

google-re2 is optional (``pip install 'aioringbuf[re2]'``; the ``web``
extra includes it). Without it a pattern with no special character
(``sshd``) is still found as a plain substring; any other pattern raises
``MissingDependencyError`` saying what to install: a slow fallback to ``re``
would bring back exactly the stall this module exists to remove.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ._errors import AioRingBufError, MissingDependencyError
from ._escape import printable
from ._kerneltext import has_escapes

MAX_PATTERN = 256  # characters: enough for any name filter, small enough to compile fast
MAX_MEM = 8 << 20  # bytes RE2 may use for one compiled pattern (and its DFA cache)
_SPECIAL = frozenset(".^$*+?{}[]\\|()")

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - exercised by test_pattern's subprocess
    _re2 = None


class PatternError(AioRingBufError, ValueError):
    """A pattern that is too long or that RE2 refuses (the message says why)."""


def re2_available() -> bool:
    return _re2 is not None


class Pattern:
    """A compiled pattern: ``search(text)`` says whether it occurs in ``text``.

    Bytes that were not UTF-8 (as :func:`~aioringbuf.exec.kernel_text` holds them,
    or lone surrogates from ``surrogateescape``) are matched as
    :func:`~aioringbuf.printable` shows them: byte 0xff as the four
    characters ``\\xff``.
    """

    __slots__ = ("_literal", "_regex", "engine", "pattern")

    def __init__(self, pattern: str, *, require_re2: bool = False) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"a pattern is a str, not {type(pattern).__name__}")
        if len(pattern) > MAX_PATTERN:
            raise PatternError(f"pattern is {len(pattern)} characters long; "
                               f"at most {MAX_PATTERN} are accepted")
        self.pattern = pattern
        self._literal: str | None = None
        self._regex: Any = None
        if _re2 is not None:
            self._regex = _compile_re2(pattern)
            self.engine = "re2"
        elif require_re2 or _SPECIAL.intersection(pattern):
            raise MissingDependencyError(
                f"the pattern {pattern!r} needs google-re2, the linear-time regular "
                "expression engine, which is not installed: pip install 'aioringbuf[re2]' "
                "(a pattern without any of . ^ $ * + ? { } [ ] \\ | ( ) is matched as plain "
                "text without it)"
            )
        else:
            self._literal = pattern
            self._regex = re.compile(re.escape(pattern))  # a literal: linear in re too
            self.engine = "substring"

    def search(self, text: str) -> bool:
        """True if the pattern occurs anywhere in ``text`` (like ``re.search``)."""
        if self._literal is not None:
            return self._literal in printable(text)
        if has_escapes(text):
            text = printable(text)
        try:
            return self._regex.search(text) is not None
        except UnicodeEncodeError:  # lone surrogates: RE2 reads UTF-8 only
            return self._regex.search(printable(text)) is not None

    def sub(self, repl: Callable[[Any], str], text: str) -> str:
        """``text`` with each match replaced by ``repl(match)`` (a match object with
        ``re``'s methods: group, span, start, re.groups). Text that is not valid
        UTF-8 as lone surrogates comes back as :func:`~aioringbuf.printable`
        shows it; :func:`~aioringbuf.exec.kernel_text` escapes stay as they are."""
        try:
            return self._regex.sub(repl, text)
        except UnicodeEncodeError:
            return self._regex.sub(repl, printable(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r}, engine={self.engine!r})"


def _compile_re2(pattern: str) -> Any:
    assert _re2 is not None
    options = _re2.Options()
    options.log_errors = False  # RE2 would print parse errors on stderr itself
    options.max_mem = MAX_MEM
    try:
        return _re2.compile(pattern, options)
    except _re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"bad pattern {pattern!r}: {reason} (RE2 syntax: no "
                           "backreferences or lookaround)") from None

