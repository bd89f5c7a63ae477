"""Read paths for orders."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

from orders.models import Dish, Order

SESSION_ORDERS_KEY = "orders"


def menu() -> QuerySet[Dish]:
    return Dish.objects.filter(is_available=True).order_by("name")


def order_with_lines(order_id: str) -> Order | None:
    return Order.objects.prefetch_related("lines", "payments").filter(pk=order_id).first()


def customer_owns_order(request: HttpRequest, order: Order) -> bool:
    """Customers have no account: an order belongs to the browser session that placed it."""
    return str(order.pk) in request.session.get(SESSION_ORDERS_KEY, []) or request.user.is_staff
