"""Redaction of secrets in argv before an event leaves the server.

Command lines carry secrets more often than they should
(``mysql -phunter2``, ``curl -u bob:pw``, ``openssl ... -passin pass:x``,
``curl -d '{"password": "x"}'``). Anyone on the machine can read them in
/proc while the process lives, but a web page shows them to whoever can
reach the server, and keeps them on screen. So by default the server
blanks the usual shapes of secrets; ``--redact REGEX`` adds more.

Best effort by nature: a secret in a shape not listed here gets through
(the test of each shape is in tests/test_redact.py). Redaction never
touches ``comm`` or ``filename`` (names of programs, not arguments).
The CLI does not redact: it shows root what root could read in /proc.

The shapes:

* ``NAME=value`` and ``NAME value`` options whose name says secret
  (``--password x``, ``--api-key=x``, ``PGPASSWORD=x``, ``?token=x&``,
  ``--oauth2-bearer x``), and the bare words ``password x``, ``passwd x``.
* per program, the short options that take a password: ``mysql -pX`` and
  ``-p X`` (and the rest of the MySQL/MariaDB tools), ``sshpass -p X``,
  ``redis-cli -a X``, ``curl -u user:pw`` / ``-uuser:pw`` / ``--user``
  (the part after the first ``:``), ``smbclient -U user%pw``.
* ``pass:X`` (OpenSSL's ``-passin``/``-passout``), ``user:pw@`` in URLs,
  ``Authorization: Bearer x`` and ``X-Api-Key: x`` headers, and JSON
  members such as ``"password": "x"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_WORDS = r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|access[_-]?key|key|auth|" \
         r"credentials?|private[_-]?key|bearer)"

# Every pattern starts with a literal or is anchored, so a search costs time
# linear in the argument: argv is chosen by whoever execs, up to 4 KiB of it,
# and a pattern like r"[\w-]*password=" would take quadratic time on a long
# word (and stall the server, which redacts in its event loop).

# An option whose value is the next argument: --password hunter2, -token x, --oauth2-bearer t
FLAG_WITH_VALUE = re.compile(rf"^--?[\w.-]{{0,64}}?{_WORDS}$", re.IGNORECASE)
# A bare word whose value is the next argument: nmcli ... password hunter2
WORD_WITH_VALUE = frozenset({"password", "passwd", "passphrase"})

# (a string the pattern needs, to skip the search cheaply; the pattern)
DEFAULT_PATTERNS: tuple[tuple[str, Any], ...] = (
    # name=value: --password=x, PGPASSWORD=x, ?api_key=x&..., client_secret=x
    ("=", re.compile(rf"{_WORDS}=([^\s&;]+)", re.IGNORECASE)),
    # credentials in a URL: scheme://user:secret@host
    ("://", re.compile(r"://[^/\s:@]*:([^/\s@]+)@")),
    # HTTP auth headers: Authorization: Bearer x, X-Api-Key: x
    (":", re.compile(r"(?:authorization|x-api-key|x-auth-token)\s*:\s*"
                     r"(?:bearer\s+|basic\s+|token\s+)?(\S+)", re.IGNORECASE)),
    # OpenSSL pass phrases: -passin pass:x, -passout pass:x, -pass pass:x
    (":", re.compile(r"^pass:(.+)$", re.IGNORECASE | re.DOTALL)),
    # JSON members: {"password": "x"}, {"api_key":"x"}, escaped quotes included
    ('"', re.compile(rf'"[\w-]{{0,32}}?{_WORDS}"\s*:\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)),
)

WHOLE, AFTER_COLON, AFTER_PERCENT = "whole", "colon", "percent"
_MYSQL = {"-p": WHOLE}
# program (the basename of an argument) -> its options whose value is (part) secret
PROGRAM_OPTIONS: dict[str, dict[str, str]] = {
    **{name: _MYSQL for name in (
        "mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck",
        "mysqlpump", "mysqlslap", "mariadb", "mariadb-dump", "mariadb-admin",
        "mariadb-import", "mariadb-check", "mariadb-show", "mariadb-slap")},
    "sshpass": {"-p": WHOLE},
    "redis-cli": {"-a": WHOLE, "--pass": WHOLE, "--user": WHOLE},
    "curl": {"-u": AFTER_COLON, "--user": AFTER_COLON, "-U": AFTER_COLON,
             "--proxy-user": AFTER_COLON},
    "smbclient": {"-U": AFTER_PERCENT, "--user": AFTER_PERCENT},
}


def _mask_value(value: str, how: str) -> str:
    if how == WHOLE:
        return MASK
    sep = ":" if how == AFTER_COLON else "%"
    user, found, _ = value.partition(sep)
    return f"{user}{sep}{MASK}" if found else value


class Redactor:
    """Masks secrets in an argv list: each match (or its first group) becomes ``***``.

    ``extra`` patterns need ``.sub(function, text)`` with ``re``'s match
    objects: ``re.Pattern`` or ``aioringbuf.exec.Pattern`` (RE2, for patterns
    from the command line: they run on strangers' argv).
    """

    def __init__(self, extra: Iterable[Any] = (), defaults: bool = True) -> None:
        self.patterns = (DEFAULT_PATTERNS if defaults else ()) + tuple(("", p) for p in extra)
        self.flags = defaults

    def __call__(self, argv: list[str]) -> list[str]:
        out: list[str] = []
        pending: str | None = None  # how the next argument is secret
        options: dict[str, str] = {}  # the current program's secret options
        for i, arg in enumerate(argv):
            if pending is not None:
                out.append(_mask_value(arg, pending))
                pending = None
                continue
            if not self.flags:
                out.append(self.mask(arg))
                continue
            program = PROGRAM_OPTIONS.get(arg.rpartition("/")[2])
            if program is not None:  # argv[0], or after sudo, env, ssh host, ...
                options = program
            how = options.get(arg.partition("=")[0])
            if how is not None and "=" in arg:  # --user=bob:pw
                name, _, value = arg.partition("=")
                out.append(f"{name}={_mask_value(value, how)}")
                continue
            if how is not None:
                pending = how
                out.append(arg)
                continue
            short = options.get(arg[:2]) if len(arg) > 2 and arg[1:2] != "-" else None
            if short is not None and arg.startswith("-"):  # -phunter2, -ubob:pw
                out.append(arg[:2] + _mask_value(arg[2:], short))
                continue
            if FLAG_WITH_VALUE.match(arg) or (i and arg.lower() in WORD_WITH_VALUE):
                pending = WHOLE
            out.append(self.mask(arg))
        return out

    def mask(self, text: str) -> str:
        for needle, pattern in self.patterns:
            if needle in text:
                text = pattern.sub(_masked, text)
        return text


def _masked(m: Any) -> str:
    if not m.re.groups or m.group(1) is None:
        return MASK
    start, end = m.span(1)
    whole = m.group(0)
    return whole[: start - m.start()] + MASK + whole[end - m.start():]
