"""An order page's websocket (live.sockets): the browser that placed the order, or staff.

The page's live parts are two regions, each sent when a notice names it: the status (the
delivery service moved the order) and the notifications (the notification service). They
read the same for the customer and for staff, so one read serves every socket of the order.
"""

from __future__ import annotations

from uuid import UUID

from django.template.loader import render_to_string
from django.urls import reverse

from live.notices import ORDER_NOTIFICATIONS, ORDER_STATUS, order_stream
from live.sockets import LiveStreamSocket, Round
from notifications import selectors as notification_selectors
from orders import selectors


class OrderSocket(LiveStreamSocket):
    push_interval = 0.05

    def allowed_stream(self) -> str | None:
        # The same rule as the order page.
        order_id = str(self.scope["url_route"]["kwargs"]["order_id"])
        owned = order_id in selectors.orders_in_cookie(self.scope["cookies"])
        return order_stream(order_id) if owned or self.scope["user"].is_staff else None

    def page_path(self) -> str:
        return reverse("order-detail", kwargs={"order_id": self.scope["url_route"]["kwargs"]["order_id"]})

    @classmethod
    def read_changes(cls, stream: str, changed: frozenset[str] | None, followers: list) -> dict[str, str]:
        return cls.read_many([(stream, changed, followers)])[0]

    @classmethod
    def read_many(cls, rounds: list[Round]) -> list[dict[str, str]]:
        # A thousand order pages: the orders of every round due together, in three queries.
        wanted = [
            (_order_id(stream), {ORDER_STATUS, ORDER_NOTIFICATIONS} if changed is None else changed)
            for stream, changed, _ in rounds
        ]
        progress = selectors.progresses({o for o, regions in wanted if o and ORDER_STATUS in regions})
        notifications = notification_selectors.for_orders(
            {o for o, regions in wanted if o and ORDER_NOTIFICATIONS in regions}
        )
        results = []
        for order_id, regions in wanted:
            markup: dict[str, str] = {}
            if order_id in progress and ORDER_STATUS in regions:
                context = {"progress": progress[order_id]}
                markup[ORDER_STATUS] = render_to_string("orders/order_status.html", context)
            if order_id in notifications and ORDER_NOTIFICATIONS in regions:
                context = {"notifications": notifications[order_id]}
                markup[ORDER_NOTIFICATIONS] = render_to_string("notifications/order_notifications_list.html", context)
            results.append(markup)
        return results

    def frame(self, regions: dict[str, str]) -> dict | None:
        return self.changed_regions(regions)

    def page_sent(self, regions: dict[str, str]) -> None:
        self.forget_regions()


def _order_id(stream: str) -> str | None:
    """The order of an order page's stream, or None if it names none (a notice from elsewhere)."""
    try:
        return str(UUID(stream.removeprefix(order_stream(""))))
    except ValueError:
        return None
