"""Read paths for orders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.core import signing
from django.db.models import QuerySet
from django.http import HttpRequest

from deliveries.models import Delivery
from deliveries.selectors import delivery_of_order
from orders.models import Dish, Order

# Customers have no account: the orders a browser placed are listed in a signed cookie
# (not the database session, so an anonymous order costs no session row to write).
ORDERS_COOKIE = "orders"
ORDERS_COOKIE_SALT = "foodsite.orders"
ORDERS_COOKIE_MAX_AGE = 30 * 24 * 3600
ORDERS_REMEMBERED = 50  # the newest; older orders drop off the cookie


def menu() -> QuerySet[Dish]:
    return Dish.objects.filter(is_available=True).order_by("name")


def dishes_on_menu(ids: Iterable[int]) -> list[Dish]:
    """Those of these dishes that are on the menu now."""
    return list(menu().filter(pk__in=list(ids)))


class MenuCopy:
    """The dishes of the menu as this process last read them, by id, to build orders from
    without reading them for each order. An order built from a copy that is no longer what
    the database holds (a price changed since) is not written: services.place_order's write
    checks every ordered dish against the menu table in the same statement or transaction,
    then reads the dishes again (`read_again`). So the copy costs a stale order a second
    try, never a wrong price. Only dishes found on the menu are kept: it is at most the
    menu's size, whatever ids requests name."""

    def __init__(self) -> None:
        self._dishes: dict[int, Dish] = {}  # replaced whole per dish, never changed in place

    def dishes(self, ids: Iterable[int]) -> dict[int, Dish]:
        """Those of these dishes that are on the menu, as last read (those never read, now)."""
        ids = list(ids)
        missing = [dish_id for dish_id in ids if dish_id not in self._dishes]
        if missing:
            self._keep(missing, dishes_on_menu(missing))
        return self._held(ids)

    def read_again(self, ids: Iterable[int]) -> dict[int, Dish]:
        """Those of these dishes that are on the menu now, read from the database."""
        ids = list(ids)
        self._keep(ids, dishes_on_menu(ids))
        return self._held(ids)

    def _held(self, ids: list[int]) -> dict[int, Dish]:
        return {dish_id: dish for dish_id in ids if (dish := self._dishes.get(dish_id)) is not None}

    def _keep(self, ids: list[int], found: list[Dish]) -> None:
        """`found`: those of `ids` on the menu; the others are dropped."""
        by_id = {dish.pk: dish for dish in found}
        for dish_id in ids:  # each a single dictionary operation: other threads read meanwhile
            if dish_id in by_id:
                self._dishes[dish_id] = by_id[dish_id]
            else:
                self._dishes.pop(dish_id, None)


MENU = MenuCopy()


def dishes_to_order(ids: Iterable[int]) -> dict[int, Dish]:
    """The dishes an order of these ids is built from: the process's copy of the menu."""
    return MENU.dishes(ids)


def order_with_lines(order_id: str) -> Order | None:
    return Order.objects.prefetch_related("lines", "payments").filter(pk=order_id).first()


def _orders_signer() -> signing.TimestampSigner:
    return signing.get_cookie_signer(salt=ORDERS_COOKIE_SALT)


def orders_cookie_value(order_ids: list[str]) -> str:
    """The signed cookie value listing these orders ("." needs no quoting in a cookie)."""
    return _orders_signer().sign(".".join(order_ids[-ORDERS_REMEMBERED:]))


def orders_in_cookie(cookies: Mapping[str, str]) -> list[str]:
    """The order ids a browser's signed orders cookie lists; none if it is missing or forged."""
    value = cookies.get(ORDERS_COOKIE)
    if not value:
        return []
    try:
        return _orders_signer().unsign(value, max_age=ORDERS_COOKIE_MAX_AGE).split(".")
    except signing.BadSignature:
        return []


def customer_owns_order(request: HttpRequest, order: Order) -> bool:
    """An order belongs to the browser that placed it (its signed cookie); staff see all."""
    return str(order.pk) in orders_in_cookie(request.COOKIES) or request.user.is_staff


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
    return progress_with(order, delivery_of_order(order.pk))


def progresses(order_ids: Iterable[str]) -> dict[str, OrderProgress]:
    """order_progress of many orders in two queries (the order pages' live reads)."""
    orders = Order.objects.filter(pk__in=order_ids)
    deliveries = {str(d.order_id): d for d in Delivery.objects.filter(order_id__in=order_ids)}
    return {str(o.pk): progress_with(o, deliveries.get(str(o.pk))) for o in orders}


def progress_with(order: Order, delivery: Delivery | None) -> OrderProgress:
    if order.status == Order.Status.PLACED:
        return OrderProgress(order.get_status_display(), 0, "")
    status = delivery.status if delivery else Delivery.Status.TO_DELIVER
    courier = delivery.courier if delivery else ""
    if status == Delivery.Status.DELIVERED:
        return OrderProgress("Delivered", 3, courier)
    if status == Delivery.Status.OUT_FOR_DELIVERY:
        return OrderProgress("Out for delivery", 2, courier)
    return OrderProgress("Paid", 1, courier)
