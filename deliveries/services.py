"""Write paths of the delivery service's web side: couriers' steps become delivery-status events."""

from __future__ import annotations

from uuid import UUID

from django.db import transaction

from contract.events import DeliveryClaimed, DeliveryDelivered, DeliveryPickedUp, Event
from deliveries import selectors
from deliveries.models import Delivery
from eventing import outbox

# URL word -> (event, the status the delivery must be in, whether it must be this courier's)
COURIER_STEPS: dict[str, tuple[type, str, bool]] = {
    "claim": (DeliveryClaimed, Delivery.Status.TO_DELIVER, False),
    "pick-up": (DeliveryPickedUp, Delivery.Status.CLAIMED, True),
    "deliver": (DeliveryDelivered, Delivery.Status.OUT_FOR_DELIVERY, True),
}


class CourierStepRefused(Exception):
    """The step does not fit the delivery as the delivery service last saw it. Carries a
    message for the courier."""


def report_courier_step(*, courier: str, order_id: UUID, step: str) -> Event:
    """Publish a courier's step (claim, pick-up, deliver) through the outbox.

    Checked against the delivery service's projection, which may be a moment behind: two
    couriers claiming at the same instant both pass here, and the projection keeps the first
    claim in the log (deliveries.projection). The web never writes the projection itself."""
    if step not in COURIER_STEPS:
        raise CourierStepRefused(f"Unknown step {step!r}: use one of {', '.join(COURIER_STEPS)}.")
    event_class, required_status, own_only = COURIER_STEPS[step]
    delivery = selectors.delivery_of_order(order_id)
    if delivery is None or delivery.placed_at is None or delivery.paid_at is None:
        raise CourierStepRefused("This order is not a paid delivery (yet).")
    if own_only and delivery.courier != courier:
        raise CourierStepRefused("This delivery is not yours: claim it first.")
    if delivery.status != required_status:
        if step == "claim" and delivery.courier:
            raise CourierStepRefused(f"Already claimed by {delivery.courier}.")
        raise CourierStepRefused(f"This delivery is {delivery.get_status_display().lower()}: it cannot {step}.")
    event = Event(event_class(order_id=str(order_id), courier=courier))
    with transaction.atomic():
        outbox.enqueue(event)
    return event
