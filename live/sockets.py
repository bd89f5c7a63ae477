"""Websockets of the live pages: one stream per page, each checked like the page itself.

When its stream changes, a socket sends its page as the browser's re-fetch would get it: the
web process reads the page in-process through the ordinary view (`read_page`: every
middleware, login and permission check, with the cookies the socket was opened with), and
live.js swaps its live regions from that. So the change costs one render on the server and
no round trip of the browser's, and a socket can still only carry what a GET by the same
browser would: a page that is not a 200 (logged out since, no longer allowed) is not sent,
only the notice, and the browser re-fetches the page itself. An anonymous or wrong user is
refused before the handshake completes (the browser sees HTTP 403).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.dispatch import Signal

from live.bridge import ensure_bridge

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.sockets")

# The handshake's own headers: the page's GET is an ordinary request, not an upgrade.
_SOCKET_ONLY_HEADERS = frozenset(
    {
        b"connection",
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]

# Sent with `page` ("courier", "stats", "order") and `change` (+1 when a socket of that page
# is accepted, -1 when it closes): the project counts them (observability.metrics).
socket_opened_or_closed = Signal()


async def read_page(http_application: ASGIApp, socket_scope: dict, path: str) -> str | None:
    """The page at `path` as this socket's browser would GET it: through the web's own HTTP
    handler `http_application` (so on its threads, with every middleware), with the headers
    and cookies the socket was opened with. Its HTML, or None unless the answer is a 200."""
    headers = [(name, value) for name, value in socket_scope.get("headers", ()) if name not in _SOCKET_ONLY_HEADERS]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https" if socket_scope.get("scheme") == "wss" else "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": socket_scope.get("root_path", ""),
        "headers": [*headers, (b"x-live-refresh", b"1")],
        "client": socket_scope.get("client"),
        "server": socket_scope.get("server"),
    }
    answered = asyncio.Event()
    requested = False
    status = 0
    body: list[bytes] = []

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()  # Django listens for a disconnect while it works: none comes
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                answered.set()

    try:
        await http_application(scope, receive, send)
    finally:
        answered.set()
    return b"".join(body).decode() if status == 200 else None


class LiveStreamSocket(AsyncJsonWebsocketConsumer):
    """A live page's websocket. Each app's page has its subclass (its stream, its page, who
    may follow it); the project's routing gives each one the HTTP application to read its
    page through: `CourierSocket.as_asgi(pages=http_application)`."""

    stream: str | None = None
    _sending: asyncio.Task | None = None  # the page being read and sent, if any
    _again = False  # a notice came meanwhile: read the page once more after

    def __init__(self, *args: object, pages: ASGIApp, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.pages = pages

    async def connect(self) -> None:
        self.stream = await database_sync_to_async(self.allowed_stream)()
        if self.stream is None:
            await self.close()  # before accept(): the handshake is refused with HTTP 403
            return
        ensure_bridge()
        await self.channel_layer.group_add(self.stream, self.channel_name)
        await self.accept()
        socket_opened_or_closed.send(type(self), page=self.page(), change=1)

    async def disconnect(self, code: int) -> None:
        if self._sending is not None:
            self._sending.cancel()
        if self.stream is not None:
            await self.channel_layer.group_discard(self.stream, self.channel_name)
            socket_opened_or_closed.send(type(self), page=self.page(), change=-1)

    @classmethod
    def page(cls) -> str:
        return cls.__name__.removesuffix("Socket").lower()  # courier, stats, order

    async def stream_changed(self, message: dict) -> None:
        # Notices come faster than pages render under load: while one is read, the next
        # notices ask for one more read, not one each (live.js did the same with re-fetches).
        if self._sending is not None and not self._sending.done():
            self._again = True
            return
        self._sending = asyncio.create_task(self._send_page(message["stream"]))

    async def _send_page(self, stream: str) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                page = await read_page(self.pages, self.scope, self.page_path())
            except Exception:  # the notice alone still brings the browser's own re-fetch
                log.exception("live page %s not read for its socket", self.page_path())
                page = None
            await self.send_json({"stream": stream, "page": page} if page is not None else {"stream": stream})

    def page_path(self) -> str:
        """The page this socket belongs to (what its browser would re-fetch)."""
        raise NotImplementedError

    def allowed_stream(self) -> str | None:
        """The stream this user may follow on this URL, or None to refuse (runs in a thread:
        permission and session checks read the database)."""
        raise NotImplementedError
