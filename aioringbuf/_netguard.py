"""What a server facing strangers needs before it listens: a secret token and a loopback check.

Shared by ``aioringbuf exporter`` and the web example. The token comes
from a file only its owner can read, or from the environment, never from
the command line: every local user can read ``/proc/PID/cmdline``. The
loopback check looks at the address the socket is bound to, after the
name was resolved: ``--host 127.lan`` may resolve to anything, and
``0.0.0.0`` is every interface.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from typing import Any

from ._errors import AioRingBufError

MIN_TOKEN = 16  # characters: shorter tokens can be guessed over the network
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


class TokenError(AioRingBufError, ValueError):
    """The token cannot be used; the message says what to do."""


def read_token(path: str | None, env_var: str,
               environ: Mapping[str, str] = os.environ) -> str | None:
    """The token from ``path`` (its first line) or ``environ[env_var]``; None if neither.

    A file that group or others can read is refused: the token would not be
    secret. So is a token shorter than 16 characters.
    """
    if path is not None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise TokenError(f"cannot read the token file {path}: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise TokenError(f"the token file {path} is not a regular file")
            if mode & 0o077:
                raise TokenError(f"the token file {path} can be read by other users (mode "
                                 f"{stat.S_IMODE(mode):04o}): chmod 600 {path}")
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        token = raw.decode("utf-8", "replace").split("\n", 1)[0].strip()
        where = f"the token file {path}"
    else:
        token = (environ.get(env_var) or "").strip()
        if not token:
            return None
        where = f"${env_var}"
    if len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
        raise TokenError(f"the token in {where} must be at least {MIN_TOKEN} printable "
                         f"characters without spaces; make one with: {MAKE_ONE}")
    return token


def is_loopback(sockaddr: tuple[Any, ...]) -> bool:
    """Whether a bound socket's address (``getsockname()``) is reachable from this host only."""
    address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def refuse_open_listener(sockaddr: tuple[Any, ...], host: str, token: str | None,
                         how: str) -> None:
    """Raise TokenError if the socket is reachable beyond this host and no token guards it."""
    if token is None and not is_loopback(sockaddr):
        raise TokenError(
            f"--host {host} listens on {sockaddr[0]}, which other machines can reach, "
            f"and every exec on this machine would be theirs to see: {how}"
        )
