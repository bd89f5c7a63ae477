"""Read paths of the notifications service."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from notifications.models import Notification


def for_order(order_id: UUID | str) -> list[Notification]:
    """The order's notifications, oldest event first, for the customer's order page."""
    return list(Notification.objects.filter(order_id=order_id).order_by("occurred_at", "pk"))


def for_orders(order_ids: Iterable[str]) -> dict[str, list[Notification]]:
    """for_order of many orders in one query (the order pages' live reads)."""
    found: dict[str, list[Notification]] = {str(order_id): [] for order_id in order_ids}
    for notification in Notification.objects.filter(order_id__in=order_ids).order_by("occurred_at", "pk"):
        found[str(notification.order_id)].append(notification)
    return found
