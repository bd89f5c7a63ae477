"""An order page's websocket (live.sockets): the browser that placed the order, or staff."""

from __future__ import annotations

from django.urls import reverse

from live.notices import order_stream
from live.sockets import LiveStreamSocket
from orders.selectors import orders_in_cookie


class OrderSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        # The same rule as the order page.
        order_id = str(self.scope["url_route"]["kwargs"]["order_id"])
        owned = order_id in orders_in_cookie(self.scope["cookies"])
        return order_stream(order_id) if owned or self.scope["user"].is_staff else None

    def page_path(self) -> str:
        return reverse("order-detail", kwargs={"order_id": self.scope["url_route"]["kwargs"]["order_id"]})
