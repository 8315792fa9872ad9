"""Who may see the events: a bearer token, the Host header, browser headers.

Token (``--token`` or ``AIORINGBUF_WEB_TOKEN``), checked on every route,
static files included. It is accepted in three places because browsers
cannot do better:

* ``Authorization: Bearer TOKEN``: for scripts, curl, Prometheus.
* ``?token=TOKEN``: for the first page load. The browser's ``EventSource``
  cannot send an ``Authorization`` header, so the answer to a request
  with a good ``?token=`` also sets a cookie, and the page removes the
  token from its address bar (``history.replaceState``).
* the cookie ``aioringbuf_token_PORT``: what the page's later requests
  (app.js, ``/events``, ``/stats``) carry. ``HttpOnly`` (page scripts never
  see it) and ``SameSite=Strict`` (other sites cannot make the browser send
  it: no cross-site request forgery). Cookies ignore ports, hence the port
  in its name, so that two servers on one host do not clobber each other.

Tokens in URLs end up in history and logs: uvicorn's access log (which
prints query strings) is off unless ``--access-log``, and every response
says ``Referrer-Policy: no-referrer``.

The Host check stops DNS rebinding: a web page from elsewhere whose name
resolves to 127.0.0.1 could otherwise read the stream from the user's
browser as a same-origin request.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

ENV_VAR = "AIORINGBUF_WEB_TOKEN"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
UNAUTHORIZED = (b"401 Unauthorized: send the token as 'Authorization: Bearer TOKEN', or open "
                b"/?token=TOKEN in the browser (it then keeps it in a cookie).\n")


def cookie_name(scope: Any) -> str:
    server = scope.get("server") or ("", 0)
    return f"aioringbuf_token_{server[1]}"


class TokenAuth:
    """ASGI middleware: 401 unless the request carries the token (see the module doc)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and self._matches(credential.strip()):
            await self.app(scope, receive, send)
            return
        name = cookie_name(scope)
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed cookie header is no credential
            cookies = SimpleCookie()
        if name in cookies and self._matches(cookies[name].value):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self._matches((query.get("token") or [None])[0]):
            await self.app(scope, receive, _setting_cookie(send, name, self.token.decode()))
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"www-authenticate", b'Bearer realm="aioringbuf"'),
        ]})
        await send({"type": "http.response.body", "body": UNAUTHORIZED})


def _setting_cookie(send: Any, name: str, token: str) -> Any:
    cookie = f"{name}={token}; Path=/; HttpOnly; SameSite=Strict".encode()

    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"set-cookie", cookie)]}
        await send(message)

    return wrapped


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
