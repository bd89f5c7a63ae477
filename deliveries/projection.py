from __future__ import annotations

from uuid import UUID

from deliveries.models import Delivery
from foodsite.bulk import update_many
from foodsite.events import OrderPlaced, PaymentSucceeded
from foodsite.kafka.runner import ConsumedEvent, Projection
from foodsite.kafka.topics import ORDERS, PAYMENTS


class DeliveryProjection(Projection):
    """Deliveries to make: an order becomes one once it is both placed and paid."""

    group = "deliveries"
    topics = (ORDERS, PAYMENTS)
    handles = (OrderPlaced, PaymentSucceeded)

    def reset(self) -> None:
        Delivery.objects.all().delete()

    def apply(self, events: list[ConsumedEvent]) -> None:
        order_ids = {UUID(e.payload.order_id) for e in events}
        existing = Delivery.objects.in_bulk(order_ids, field_name="order_id")
        new: dict[UUID, Delivery] = {}
        for consumed in events:
            order_id = UUID(consumed.payload.order_id)
            delivery = existing.get(order_id) or new.setdefault(order_id, Delivery(order_id=order_id))
            payload = consumed.payload
            if isinstance(payload, OrderPlaced):
                delivery.customer_name = payload.customer_name
                delivery.address = payload.address
                delivery.items = [{"name": line.name, "quantity": line.quantity} for line in payload.lines]
                delivery.total = payload.total
                delivery.placed_at = consumed.event.occurred_at
            else:
                delivery.paid_at = consumed.event.occurred_at
        Delivery.objects.bulk_create(new.values())
        if existing:
            update_many(list(existing.values()), ["customer_name", "address", "items", "total", "placed_at", "paid_at"])
