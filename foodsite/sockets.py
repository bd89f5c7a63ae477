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

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.urls import reverse

from deliveries.permissions import is_courier
from foodsite.live import courier_stream, ensure_bridge, order_stream, stats_stream
from foodsite.metrics import WEBSOCKETS_OPEN
from orders.selectors import orders_in_cookie

log = logging.getLogger(__name__)

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


async def read_page(socket_scope: dict, path: str) -> str | None:
    """The page at `path` as this socket's browser would GET it: through the web's own HTTP
    handler (so on its threads, with every middleware), with the headers and cookies the
    socket was opened with. Its HTML, or None unless the answer is a 200."""
    from foodsite.asgi import http_application  # here: foodsite.asgi imports this module

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
    stream: str | None = None
    _sending: asyncio.Task | None = None  # the page being read and sent, if any
    _again = False  # a notice came meanwhile: read the page once more after

    async def connect(self) -> None:
        self.stream = await database_sync_to_async(self.allowed_stream)()
        if self.stream is None:
            await self.close()  # before accept(): the handshake is refused with HTTP 403
            return
        ensure_bridge()
        await self.channel_layer.group_add(self.stream, self.channel_name)
        await self.accept()
        WEBSOCKETS_OPEN.labels(self.page()).inc()

    async def disconnect(self, code: int) -> None:
        if self._sending is not None:
            self._sending.cancel()
        if self.stream is not None:
            await self.channel_layer.group_discard(self.stream, self.channel_name)
            WEBSOCKETS_OPEN.labels(self.page()).dec()

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
                page = await read_page(self.scope, self.page_path())
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


class CourierSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        return courier_stream() if is_courier(self.scope["user"]) else None

    def page_path(self) -> str:
        return reverse("courier")


class StatsSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        user = self.scope["user"]
        return stats_stream() if user.is_authenticated and user.is_staff else None

    def page_path(self) -> str:
        return reverse("stats")


class OrderSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        # The same rule as the order page: the browser that placed it, or staff.
        order_id = str(self.scope["url_route"]["kwargs"]["order_id"])
        owned = order_id in orders_in_cookie(self.scope["cookies"])
        return order_stream(order_id) if owned or self.scope["user"].is_staff else None

    def page_path(self) -> str:
        return reverse("order-detail", kwargs={"order_id": self.scope["url_route"]["kwargs"]["order_id"]})
