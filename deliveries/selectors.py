from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from deliveries.models import Delivery


def deliveries_to_make() -> QuerySet[Delivery]:
    """Placed and paid, not yet delivered; oldest payment first."""
    return (
        Delivery.objects.filter(placed_at__isnull=False, paid_at__isnull=False)
        .exclude(status=Delivery.Status.DELIVERED)
        .order_by("paid_at")
    )


def delivery_of_order(order_id: UUID | str) -> Delivery | None:
    """The delivery service's view of one order, or None if it has not seen the order yet."""
    return Delivery.objects.filter(order_id=order_id).first()
