"""Who may see the events: a bearer token, a session cookie, the Host header, browser headers.

The token comes from a file (``--token-file``, readable by its owner only)
or the environment (``AIORINGBUF_WEB_TOKEN``), never from the command line
(every local user can read ``/proc/PID/cmdline``), and is never printed.
It is checked on every route and every ASGI connection type (HTTP and
WebSocket; the lifespan is the server's own), in three forms:

* ``Authorization: Bearer TOKEN``: for scripts, curl, Prometheus.
* ``?token=TOKEN``: for the first page load only. The answer sets a
  session cookie and the page removes the token from its address bar
  (``history.replaceState``).
* the session cookie, for the page's later requests (the browser's
  ``EventSource`` cannot send an ``Authorization`` header). It does not
  hold the token: its name and value are random, made when the server
  starts, so it is worth nothing to any other server and nothing after a
  restart. That matters because cookies ignore ports: a page served from
  another port of the same host receives it too. ``HttpOnly`` (page
  scripts never see it) and ``SameSite=Strict`` (other sites cannot make
  the browser send it: no cross-site request forgery).

Cookies are parsed here, in one linear pass over a bounded header, not by
``http.cookies.SimpleCookie``, which is quadratic on some inputs
(CVE-2024-7592) and would let anyone slow the server before any check.

Tokens in URLs end up in history and logs: uvicorn's access log (which
prints query strings) is off unless ``--access-log``, and every response
says ``Referrer-Policy: no-referrer``.

The Host check stops DNS rebinding: a web page from elsewhere whose name
resolves to 127.0.0.1 could otherwise read the stream from the user's
browser as a same-origin request.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs

ENV_VAR = "AIORINGBUF_WEB_TOKEN"
MAX_COOKIE_HEADER = 8192  # bytes of Cookie: looked at; h11 bounds the whole head anyway
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
UNAUTHORIZED = (b"401 Unauthorized: send the token as 'Authorization: Bearer TOKEN', or open "
                b"/?token=TOKEN in the browser (it then keeps a session cookie).\n")


def parse_cookies(header: bytes) -> dict[str, str]:
    """``name=value; name2=value2`` as a dict, the first of each name winning.

    One split per separator: time linear in the header, whatever it holds.
    Quotes and escapes are not interpreted (our cookie never needs them); an
    oversized header is no credential.
    """
    if len(header) > MAX_COOKIE_HEADER:
        return {}
    cookies: dict[str, str] = {}
    for part in header.decode("latin-1").split(";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if eq and name and name not in cookies:
            cookies[name] = value.strip()
    return cookies


class Session:
    """This server's session cookie: a random name and value, made at start-up."""

    def __init__(self) -> None:
        self.name = f"aioringbuf_session_{secrets.token_hex(4)}"
        self.secret = secrets.token_urlsafe(32)

    def matches(self, cookies: dict[str, str]) -> bool:
        value = cookies.get(self.name)
        return value is not None and hmac.compare_digest(value.encode(), self.secret.encode())

    def set_cookie(self) -> bytes:
        return f"{self.name}={self.secret}; Path=/; HttpOnly; SameSite=Strict".encode()


class TokenAuth:
    """ASGI middleware: 401 (or a WebSocket close) unless a request carries the token
    or the session cookie. See the module doc."""

    def __init__(self, app: Any, token: str, session: Session | None = None) -> None:
        self.app = app
        self.token = token.encode()
        self.session = session or Session()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    def _credential(self, scope: Any) -> str | None:
        """How the request proves itself: "bearer", "cookie", "query" or None."""
        auth = cookie = b""
        for key, value in scope.get("headers") or ():
            if key == b"authorization" and not auth:
                auth = value
            elif key == b"cookie" and not cookie:
                cookie = value
        scheme, _, credential = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and self._matches(credential.strip()):
            return "bearer"
        if cookie and self.session.matches(parse_cookies(cookie)):
            return "cookie"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=32)
        if self._matches((query.get("token") or [None])[0]):
            return "query"
        return None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":  # the server's own start-up and shutdown, not a client
            await self.app(scope, receive, send)
            return
        credential = self._credential(scope) if kind in ("http", "websocket") else None
        if credential == "query" and kind == "http":
            await self.app(scope, receive, self._setting_cookie(send))
        elif credential is not None:
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
        elif kind == "http":
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"www-authenticate", b'Bearer realm="aioringbuf"'),
            ]})
            await send({"type": "http.response.body", "body": UNAUTHORIZED})
        else:
            raise RuntimeError(f"refusing an ASGI connection of unknown type {kind!r}")

    def _setting_cookie(self, send: Any) -> Any:
        cookie = self.session.set_cookie()

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", cookie)]}
            await send(message)

        return wrapped


class HeadLimit:
    """ASGI middleware: 431 for a request whose line and headers exceed ``limit`` bytes.

    h11's ``max_incomplete_event_size`` only bounds a head that arrives in
    pieces: one that comes in a single read (64 KiB, for uvicorn) passes
    whole. This bounds what the rest of the app (and the token check)
    ever looks at.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())
            if size > self.limit:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                    return
                await send({"type": "http.response.start", "status": 431, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
                await send({"type": "http.response.body",
                            "body": b"431 Request Header Fields Too Large: at most %d bytes\n"
                                    % self.limit})
                return
        await self.app(scope, receive, send)


class BrowserHeaders:
    """ASGI middleware: a strict Content-Security-Policy and friends on every answer.

    The page inserts event fields with ``textContent`` only, and the CSP
    forbids inline scripts besides: argv is text anyone on the machine
    chooses, so it must never become markup.
    """

    HEADERS = (
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, wrapped)


def allowed_hosts(host: str) -> list[str]:
    """Host header values to accept: loopback names, plus the address we bind."""
    if host in ("0.0.0.0", "::"):
        return ["*"]  # every name may be right; the token (required then) protects
    return sorted({"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host})
