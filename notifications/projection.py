from __future__ import annotations

from datetime import datetime
from uuid import UUID

from contract.events import DeliveryDelivered, DeliveryPickedUp, OrderPlaced, PaymentSucceeded
from eventing.projection import ConsumedEvent, Projection
from eventing.registry import register
from eventing.topics import DELIVERY_STATUS, ORDERS, PAYMENTS
from live.notices import ORDER_NOTIFICATIONS, Changes, order_stream
from notifications.models import Notification, Recipient
from notifications.services import schedule_sending

KINDS = {
    OrderPlaced: Notification.Kind.RECEIVED,
    PaymentSucceeded: Notification.Kind.PAID,
    DeliveryPickedUp: Notification.Kind.OUT_FOR_DELIVERY,
    DeliveryDelivered: Notification.Kind.DELIVERED,
}


@register
class NotificationProjection(Projection):
    """One notification per (order, kind), emailed by a Celery task after the commit.

    `order.placed` also gives the recipient (name, optional email); the other events may be
    read before it (another topic), so the address is looked up when sending."""

    group = "notifications"
    topics = (ORDERS, PAYMENTS, DELIVERY_STATUS)
    handles = tuple(KINDS)

    def reset(self) -> None:
        # Only the recipients, which the replay rebuilds. The Notification rows stay: they
        # are the log of emails that left, and the replay's events find their (order, kind)
        # taken, so a rebuild re-reads everything and emails nobody a second time.
        Recipient.objects.all().delete()

    def apply(self, events: list[ConsumedEvent]) -> None:
        recipients: dict[UUID, Recipient] = {}
        notifications: dict[tuple[UUID, str], tuple[datetime, str]] = {}
        for consumed in events:
            payload = consumed.payload
            order_id = UUID(payload.order_id)
            if isinstance(payload, OrderPlaced):
                recipients[order_id] = Recipient(
                    order_id=order_id,
                    customer_name=payload.customer_name,
                    email=payload.email or "",
                    total=payload.total,
                )
            notifications.setdefault(
                (order_id, KINDS[type(payload)]), (consumed.event.occurred_at, consumed.traceparent)
            )
        Recipient.objects.bulk_create(
            recipients.values(),
            update_conflicts=True,
            unique_fields=["order_id"],
            update_fields=["customer_name", "email", "total"],
        )
        # A duplicate or replayed event meets the unique (order, kind) and adds nothing.
        Notification.objects.bulk_create(
            (
                Notification(order_id=o, kind=k, occurred_at=at, traceparent=trace)
                for (o, k), (at, trace) in notifications.items()
            ),
            ignore_conflicts=True,
        )
        # New rows, and rows that waited for their order's address: sent after the commit.
        pending = Notification.objects.filter(
            order_id__in={order_id for order_id, _ in notifications}, status=Notification.Status.PENDING
        ).values_list("pk", flat=True)
        schedule_sending(list(pending))

    def live_changes(self, events: list[ConsumedEvent]) -> Changes:
        # The order pages show their notifications (a live region): new rows appear at once.
        return {order_stream(e.payload.order_id): {ORDER_NOTIFICATIONS} for e in events}
