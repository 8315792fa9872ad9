"""Redaction of secrets in argv before an event leaves the server.

Command lines carry secrets more often than they should
(``mysql --password=...``, ``curl -H 'Authorization: Bearer ...'``,
``git clone https://user:token@host/...``). Anyone on the machine can read
them in /proc while the process lives, but a web page shows them to
whoever can reach the server, and keeps them on screen. So by default the
server blanks the usual shapes of secrets; ``--redact REGEX`` adds more.

Best effort by nature: a secret in an unusual shape gets through. Redaction
never touches ``comm`` or ``filename`` (names of programs, not arguments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_WORDS = r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|access[_-]?key|key|auth|" \
         r"credentials?|private[_-]?key)"

# Every pattern starts with a literal or is anchored, so a search costs time
# linear in the argument: argv is chosen by whoever execs, up to 4 KiB of it,
# and a pattern like r"[\w-]*password=" would take quadratic time on a long
# word (and stall the server, which redacts in its event loop).

# An option whose value is the next argument: --password hunter2, -token x, --api-key k
FLAG_WITH_VALUE = re.compile(rf"^--?[\w.-]{{0,64}}?{_WORDS}$", re.IGNORECASE)

# (a string the pattern needs, to skip the search cheaply; the pattern)
DEFAULT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # name=value: --password=x, PGPASSWORD=x, ?api_key=x&..., client_secret=x
    ("=", re.compile(rf"{_WORDS}=([^\s&;]+)", re.IGNORECASE)),
    # credentials in a URL: scheme://user:secret@host
    ("://", re.compile(r"://[^/\s:@]*:([^/\s@]+)@")),
    # HTTP auth headers: Authorization: Bearer x, X-Api-Key: x
    (":", re.compile(r"(?:authorization|x-api-key|x-auth-token)\s*:\s*"
                     r"(?:bearer\s+|basic\s+|token\s+)?(\S+)", re.IGNORECASE)),
)


class Redactor:
    """Masks secrets in an argv list: each match (or its first group) becomes ``***``."""

    def __init__(self, extra: Iterable[re.Pattern[str]] = (), defaults: bool = True) -> None:
        self.patterns = (DEFAULT_PATTERNS if defaults else ()) + tuple(("", p) for p in extra)
        self.flags = defaults

    def __call__(self, argv: list[str]) -> list[str]:
        out: list[str] = []
        mask_next = False
        for arg in argv:
            if mask_next:
                out.append(MASK)
                mask_next = False
                continue
            if self.flags and FLAG_WITH_VALUE.match(arg):
                mask_next = True
            out.append(self.mask(arg))
        return out

    def mask(self, text: str) -> str:
        for needle, pattern in self.patterns:
            if needle in text:
                text = pattern.sub(_masked, text)
        return text


def _masked(m: re.Match[str]) -> str:
    if not m.re.groups or m.group(1) is None:
        return MASK
    start, end = m.span(1)
    whole = m.group(0)
    return whole[: start - m.start()] + MASK + whole[end - m.start():]
