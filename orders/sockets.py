"""An order page's websocket (live.sockets): the browser that placed the order, or staff.

The page's live parts are two regions, each sent when a notice names it: the status (the
delivery service moved the order) and the notifications (the notification service). They
read the same for the customer and for staff, so one read serves every socket of the order.
"""

from __future__ import annotations

from django.template.loader import render_to_string
from django.urls import reverse

from live.notices import ORDER_NOTIFICATIONS, ORDER_STATUS, order_stream
from live.sockets import LiveStreamSocket
from notifications import selectors as notification_selectors
from orders import selectors
from orders.models import Order


class OrderSocket(LiveStreamSocket):
    push_interval = 0.1

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._sent: dict[str, str] = {}  # region -> the markup the page has

    def allowed_stream(self) -> str | None:
        # The same rule as the order page.
        order_id = str(self.scope["url_route"]["kwargs"]["order_id"])
        owned = order_id in selectors.orders_in_cookie(self.scope["cookies"])
        return order_stream(order_id) if owned or self.scope["user"].is_staff else None

    def page_path(self) -> str:
        return reverse("order-detail", kwargs={"order_id": self.scope["url_route"]["kwargs"]["order_id"]})

    @classmethod
    def read_changes(cls, stream: str, changed: frozenset[str] | None, followers: list) -> dict[str, str]:
        order_id = stream.removeprefix(order_stream(""))
        regions = {ORDER_STATUS, ORDER_NOTIFICATIONS} if changed is None else changed
        markup: dict[str, str] = {}
        if ORDER_STATUS in regions:
            order = Order.objects.filter(pk=order_id).first()
            if order is not None:
                progress = selectors.order_progress(order)
                markup[ORDER_STATUS] = render_to_string("orders/order_status.html", {"progress": progress})
        if ORDER_NOTIFICATIONS in regions:
            notifications = notification_selectors.for_order(order_id)
            markup[ORDER_NOTIFICATIONS] = render_to_string(
                "notifications/order_notifications_list.html", {"notifications": notifications}
            )
        return markup

    def frame(self, regions: dict[str, str]) -> dict | None:
        changed = {name: html for name, html in regions.items() if self._sent.get(name) != html}
        self._sent.update(changed)
        return {"regions": changed} if changed else None

    def page_sent(self, regions: dict[str, str]) -> None:
        self._sent = {}  # the page's regions are newer than this round's: send the next ones whatever they hold
