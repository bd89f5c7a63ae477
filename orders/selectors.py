"""Read paths for orders."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import HttpRequest

from deliveries.models import Delivery
from deliveries.selectors import delivery_of_order
from orders.models import Dish, Order

SESSION_ORDERS_KEY = "orders"


def menu() -> QuerySet[Dish]:
    return Dish.objects.filter(is_available=True).order_by("name")


def order_with_lines(order_id: str) -> Order | None:
    return Order.objects.prefetch_related("lines", "payments").filter(pk=order_id).first()


def customer_owns_order(request: HttpRequest, order: Order) -> bool:
    """Customers have no account: an order belongs to the browser session that placed it."""
    return str(order.pk) in request.session.get(SESSION_ORDERS_KEY, []) or request.user.is_staff


@dataclass(frozen=True)
class OrderProgress:
    label: str  # what the customer reads, e.g. "Out for delivery"
    step: int  # index in STEPS of the step reached
    courier: str  # who has it, once a courier claimed it

    STEPS = ("Placed", "Paid", "Out for delivery", "Delivered")

    def steps(self) -> list[tuple[str, str]]:
        """(name, "done" | "current" | "todo") for each step, for the progress bar."""
        return [
            (name, "done" if i < self.step else "current" if i == self.step else "todo")
            for i, name in enumerate(self.STEPS)
        ]


def order_progress(order: Order) -> OrderProgress:
    """The order's status as the services report it: placed and paid are the web's own
    records; out for delivery and delivered are what the delivery service has consumed from
    the couriers' events (its projection, so a moment behind the courier's click)."""
    if order.status == Order.Status.PLACED:
        return OrderProgress(order.get_status_display(), 0, "")
    delivery = delivery_of_order(order.pk)
    status = delivery.status if delivery else Delivery.Status.TO_DELIVER
    courier = delivery.courier if delivery else ""
    if status == Delivery.Status.DELIVERED:
        return OrderProgress("Delivered", 3, courier)
    if status == Delivery.Status.OUT_FOR_DELIVERY:
        return OrderProgress("Out for delivery", 2, courier)
    return OrderProgress("Paid", 1, courier)
