from __future__ import annotations

import logging
from uuid import UUID

from contract.events import (
    DeliveryClaimed,
    DeliveryDelivered,
    DeliveryPickedUp,
    DeliveryStatusChanged,
    OrderPlaced,
    PaymentSucceeded,
)
from deliveries.models import Delivery
from eventing.bulk import update_many
from eventing.projection import ConsumedEvent, Projection
from eventing.registry import register
from eventing.topics import DELIVERY_STATUS, ORDERS, PAYMENTS
from live.notices import ORDER_STATUS, Changes, courier_stream, order_stream

log = logging.getLogger(__name__)

UPDATED_FIELDS = [
    "customer_name",
    "address",
    "items",
    "total",
    "placed_at",
    "paid_at",
    "status",
    "courier",
    "claimed_at",
    "picked_up_at",
    "delivered_at",
]


@register
class DeliveryProjection(Projection):
    """Deliveries to make: an order becomes one once it is both placed and paid; couriers'
    delivery-status events then move it along (claimed, out for delivery, delivered)."""

    group = "deliveries"
    topics = (ORDERS, PAYMENTS, DELIVERY_STATUS)
    handles = (OrderPlaced, PaymentSucceeded, DeliveryClaimed, DeliveryPickedUp, DeliveryDelivered)

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
            elif isinstance(payload, PaymentSucceeded):
                delivery.paid_at = consumed.event.occurred_at
            else:
                _apply_courier_step(delivery, payload, consumed)
        Delivery.objects.bulk_create(new.values())
        if existing:
            update_many(list(existing.values()), UPDATED_FIELDS)

    def live_changes(self, events: list[ConsumedEvent]) -> Changes:
        # A delivery is a row of the courier page (by order id) and the status of its order's page.
        order_ids = {e.payload.order_id for e in events}
        return {courier_stream(): order_ids} | {order_stream(order_id): {ORDER_STATUS} for order_id in order_ids}


def _apply_courier_step(delivery: Delivery, step: DeliveryStatusChanged, consumed: ConsumedEvent) -> None:
    """One order's status events share a partition, so they arrive in the order couriers sent
    them: the first claim in the log wins and only its courier moves the delivery on. A step
    that loses a race (two couriers claimed at once) is logged and changes nothing; it is a
    valid event, not a dead letter. Whether the order itself was read yet does not matter:
    during a replay the topics are read at different speeds."""
    at = consumed.event.occurred_at
    if isinstance(step, DeliveryClaimed):
        if not delivery.courier:
            delivery.courier, delivery.claimed_at = step.courier, at
            if delivery.status == Delivery.Status.TO_DELIVER:
                delivery.status = Delivery.Status.CLAIMED
        elif delivery.courier != step.courier:
            log.info("order %s: claim by %s ignored, %s has it", step.order_id, step.courier, delivery.courier)
        return
    if delivery.courier != step.courier:
        log.info("order %s: %s by %s ignored, %r has it", step.order_id, step.TYPE, step.courier, delivery.courier)
        return
    if isinstance(step, DeliveryPickedUp) and delivery.picked_up_at is None:
        delivery.picked_up_at = at
        if delivery.status != Delivery.Status.DELIVERED:
            delivery.status = Delivery.Status.OUT_FOR_DELIVERY
    elif isinstance(step, DeliveryDelivered) and delivery.delivered_at is None:
        delivery.delivered_at = at
        delivery.status = Delivery.Status.DELIVERED
