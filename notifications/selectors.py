"""Read paths of the notifications service."""

from __future__ import annotations

from uuid import UUID

from notifications.models import Notification


def for_order(order_id: UUID | str) -> list[Notification]:
    """The order's notifications, oldest event first, for the customer's order page."""
    return list(Notification.objects.filter(order_id=order_id).order_by("occurred_at", "pk"))
