"""Websockets of the live pages: one stream per page, each checked like the page itself.

A socket only ever receives "this stream changed"; the page then re-reads itself through the
ordinary view (foodsite.live explains why). An anonymous or wrong user is refused before
the handshake completes (the browser sees HTTP 403).
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from deliveries.permissions import is_courier
from foodsite.live import courier_stream, ensure_bridge, order_stream, stats_stream
from foodsite.metrics import WEBSOCKETS_OPEN
from orders.selectors import orders_in_cookie


class LiveStreamSocket(AsyncJsonWebsocketConsumer):
    stream: str | None = None

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
        if self.stream is not None:
            await self.channel_layer.group_discard(self.stream, self.channel_name)
            WEBSOCKETS_OPEN.labels(self.page()).dec()

    @classmethod
    def page(cls) -> str:
        return cls.__name__.removesuffix("Socket").lower()  # courier, stats, order

    async def stream_changed(self, message: dict) -> None:
        await self.send_json({"stream": message["stream"]})

    def allowed_stream(self) -> str | None:
        """The stream this user may follow on this URL, or None to refuse (runs in a thread:
        permission and session checks read the database)."""
        raise NotImplementedError


class CourierSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        return courier_stream() if is_courier(self.scope["user"]) else None


class StatsSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        user = self.scope["user"]
        return stats_stream() if user.is_authenticated and user.is_staff else None


class OrderSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        # The same rule as the order page: the browser that placed it, or staff.
        order_id = str(self.scope["url_route"]["kwargs"]["order_id"])
        owned = order_id in orders_in_cookie(self.scope["cookies"])
        return order_stream(order_id) if owned or self.scope["user"].is_staff else None
