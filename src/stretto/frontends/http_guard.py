"""An ASGI guard for stretto's HTTP servers (``stretto mcp --http``, ``stretto serve``): the
Host header must name this server (DNS rebinding), a browser's Origin must be this server's, and
every request carries the bearer token, compared in constant time. Nothing behind it runs for a
refused request.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]


class BearerAndHost:
    """ASGI guard in front of an app: 421 for a foreign Host, 403 for a foreign Origin, 401
    without the bearer token (compared in constant time), except for a GET of a ``public``
    path (a page that holds no data and asks for the token itself)."""

    def __init__(
        self,
        app: ASGI,
        token: str,
        hosts: Sequence[str] | None,
        *,
        hint: bytes = b"",
        public: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = None if hosts is None else {h.encode() for h in hosts}  # None: any
        self.origins = {b"http://" + h for h in self.hosts or ()}
        self.hint = hint or b"`stretto mcp config`"
        self.public = set(public)  # GET paths without the token: pages that hold no data

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: starts the SDK's session manager
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.hosts is not None and headers.get(b"host", b"") not in self.hosts:
            await _refuse(send, 421, b"this server answers only on 127.0.0.1 (bad Host)")
            return
        origin = headers.get(b"origin")
        if origin is not None and self.hosts is not None and origin not in self.origins:
            await _refuse(send, 403, b"cross-origin requests are refused (bad Origin)")
            return
        if scope["method"] == "GET" and scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        auth = headers.get(b"authorization", b"")
        if not (auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:], self.token)):
            extra = [(b"www-authenticate", b"Bearer")]
            await _refuse(send, 401, b"a bearer token is needed: " + self.hint, extra)
            return
        await self.app(scope, receive, send)


async def _refuse(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
