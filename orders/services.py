"""Write paths for orders: placing and paying. Each publishes its event after the commit."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from contract.events import Event, OrderPlaced, PaymentFailed, PaymentSucceeded
from contract.events import OrderLine as OrderLineEvent
from eventing import outbox
from orders import selectors
from orders.models import Dish, Order, OrderLine, Payment

MAX_QUANTITY = 50
# The simulated card processor declines this one test number, like real processors' test cards.
DECLINED_TEST_CARD = "4000000000000002"


@dataclass(frozen=True)
class CartItem:
    dish_id: int
    quantity: int


@dataclass(frozen=True)
class Card:
    number: str
    holder: str


class OrderFormReused(ValidationError):
    """The idempotency key is another order's: the form was sent again with other details (its
    page went back in history and was changed), or a request borrowed someone else's key."""

    def __init__(self) -> None:
        super().__init__(
            "This form was already used for another order, so this one is not placed: check it and order again."
        )


class OrderNotPayable(Exception):
    """The order cannot be paid (already paid). Carries a message for the customer."""


class MenuChanged(Exception):
    """An ordered dish is no longer what the order was built from (its price, name or food
    cost changed, or it left the menu): nothing was written."""


def place_order(
    *,
    customer_name: str,
    address: str,
    items: list[CartItem],
    idempotency_key: str | None = None,
    email: str | None = None,
    menu: Mapping[int, Dish] | None = None,
) -> Order:
    """Create the order at the menu's prices; `order.placed` goes out through the outbox.

    `menu`: the ordered dishes as the caller has them (the order form's, from the process's
    copy of the menu, selectors.dishes_to_order); read here when not given. Either way the
    order is written only if each of them is still so in the database, checked by the write
    itself: a dish changed since it was read is read again and the order placed at its new
    price. Prices come from the menu in the database, never from the request.

    The same idempotency key (one per rendering of the order form) gives back the order it
    already created: a double click or a browser retry does not order twice. The key's unique
    constraint tells (no look-up first: a second submit is rare, every order pays a query).
    Only for the same order, though: the key comes from the client, and a key sent with other
    details raises OrderFormReused rather than hand that order (its customer's name, address,
    email, and the right to pay it) to whoever sent the key."""
    if not items:
        raise ValidationError("Your cart is empty: choose at least one dish.")
    for item in items:
        if not 1 <= item.quantity <= MAX_QUANTITY:
            raise ValidationError(f"Quantities must be between 1 and {MAX_QUANTITY}.")
    ids = [item.dish_id for item in items]
    dishes = menu if menu is not None else selectors.dishes_to_order(ids)
    place = partial(_place, customer_name=customer_name, address=address, items=items, key=idempotency_key, email=email)
    try:
        return place(dishes=dishes)
    except MenuChanged:
        pass  # a dish changed since it was read: read them again, once
    try:
        return place(dishes=selectors.MENU.read_again(ids))
    except MenuChanged:
        raise ValidationError(
            "The menu changed while you ordered: check your dishes and their prices, then order again."
        ) from None


def _place(
    *,
    customer_name: str,
    address: str,
    items: list[CartItem],
    key: str | None,
    email: str | None,
    dishes: Mapping[int, Dish],
) -> Order:
    unknown = [item.dish_id for item in items if item.dish_id not in dishes or not dishes[item.dish_id].is_available]
    if unknown:
        raise ValidationError(f"Unknown dish: {unknown[0]}.")
    lines = [
        OrderLineEvent(
            dish_id=item.dish_id,
            name=dishes[item.dish_id].name,
            quantity=item.quantity,
            unit_price=dishes[item.dish_id].price,
            unit_cost=dishes[item.dish_id].food_cost,
        )
        for item in items
    ]
    order = Order(
        customer_name=customer_name,
        address=address,
        email=email or "",
        total=sum((line.price for line in lines), Decimal("0")),
        idempotency_key=key or None,
        created_at=timezone.now(),
    )
    event = Event(
        OrderPlaced(
            order_id=str(order.id),
            customer_name=customer_name,
            address=address,
            lines=lines,
            total=order.total,
            email=email or None,
        )
    )
    try:
        if connection.vendor == "postgresql":
            _write_in_one_statement(order, lines, event)
        else:
            _write_in_one_transaction(order, lines, event)
    except IntegrityError:
        # The same form submitted twice (at the same instant, even): the other request created
        # it. Any other constraint failing is an error of its own, raised as it is.
        existing = Order.objects.prefetch_related("lines").filter(idempotency_key=key).first() if key else None
        if existing is None:
            raise
        if not _is_the_order(existing, customer_name, address, email or "", items):
            raise OrderFormReused() from None
        return existing
    order._state.adding = False  # as if read: it is in the database now
    order._state.db = connection.alias
    return order


def _is_the_order(order: Order, customer_name: str, address: str, email: str, items: list[CartItem]) -> bool:
    """Whether `order` is what these details would place (its second submission)."""
    lines = sorted((line.dish_id, line.quantity) for line in order.lines.all())
    return (order.customer_name, order.address, order.email, lines) == (
        customer_name,
        address,
        email,
        sorted((item.dish_id, item.quantity) for item in items),
    )


def _write_in_one_transaction(order: Order, lines: list[OrderLineEvent], event: Event) -> None:
    """The ORM's writes in one transaction (SQLite: one writer at a time, no round trips to
    save), after checking the ordered dishes under its write lock."""
    with transaction.atomic():
        current = Dish.objects.filter(pk__in={line.dish_id for line in lines}, is_available=True)
        current = {dish_id: rest for dish_id, *rest in current.values_list("id", "name", "price", "food_cost")}
        if any(current.get(ln.dish_id) != [ln.name, ln.unit_price, ln.unit_cost] for ln in lines):
            raise MenuChanged
        order.save(force_insert=True)
        OrderLine.objects.bulk_create(
            OrderLine(
                order=order,
                dish_id=line.dish_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                unit_cost=line.unit_cost,
            )
            for line in lines
        )
        outbox.enqueue(event)


# One statement (PostgreSQL's data-modifying WITH): the order, its lines and its outbox row
# are written, together, only if every ordered dish is on the menu as the order was built
# from it; the statement answers whether it was. Outside a transaction it commits by itself:
# one round trip in all, where there were seven (the connection's health check, reading the
# dishes, BEGIN, three INSERTs, COMMIT). bench/order_cost.py measures it.
PLACE_ORDER_SQL = """
WITH cart (dish_id, name, quantity, unit_price, unit_cost, position) AS (
    SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::integer[], %s::numeric[], %s::numeric[])
        WITH ORDINALITY
), as_read AS (
    SELECT count(*) = %s AS yes FROM cart JOIN {dish} dish ON dish.id = cart.dish_id
    WHERE dish.is_available AND dish.name = cart.name AND dish.price = cart.unit_price
        AND dish.food_cost = cart.unit_cost
), placed AS (
    INSERT INTO {order} (id, customer_name, address, email, total, status, created_at, idempotency_key)
    SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM as_read WHERE yes
    RETURNING id
), lines AS (
    INSERT INTO {line} (order_id, dish_id, name, quantity, unit_price, unit_cost)
    SELECT placed.id, dish_id, name, quantity, unit_price, unit_cost FROM placed, cart ORDER BY position
), event AS ({event})
SELECT yes FROM as_read
"""


@functools.cache
def _place_order_sql() -> str:
    return PLACE_ORDER_SQL.format(
        dish=Dish._meta.db_table,
        order=Order._meta.db_table,
        line=OrderLine._meta.db_table,
        event=outbox.insert_sql(for_each_row_of="placed"),
    )


def _write_in_one_statement(order: Order, lines: list[OrderLineEvent], event: Event) -> None:
    row = outbox.row_of(event)
    params = [
        [line.dish_id for line in lines],
        [line.name for line in lines],
        [line.quantity for line in lines],
        [line.unit_price for line in lines],
        [line.unit_cost for line in lines],
        len(lines),
        order.id,
        order.customer_name,
        order.address,
        order.email,
        order.total,
        order.status,
        order.created_at,
        order.idempotency_key,
        *outbox.insert_params(row),
    ]
    # Inside a caller's transaction, a savepoint: a duplicate key must not break it.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(_place_order_sql(), params)
            [(as_read,)] = cursor.fetchall()
        if not as_read:
            raise MenuChanged
        outbox.stored(row)


def pay_order(*, order: Order, card: Card) -> Payment:
    """Charge the (simulated) card. Publishes `payment.succeeded` or `payment.failed`.

    Raises OrderNotPayable if the order was already paid, even by a concurrent request."""
    last4 = card.number[-4:]
    with transaction.atomic():
        if card.number == DECLINED_TEST_CARD:
            if Order.objects.filter(pk=order.pk, status=Order.Status.PAID).exists():
                raise OrderNotPayable("This order is already paid.")
            reason = "Card declined by the issuer."
            payment = Payment.objects.create(
                order=order, amount=order.total, card_last4=last4, succeeded=False, failure_reason=reason
            )
            event = Event(PaymentFailed(order_id=str(order.id), amount=order.total, reason=reason))
        else:
            # The conditional update is the lock: of two concurrent payments only one flips it.
            if not Order.objects.filter(pk=order.pk, status=Order.Status.PLACED).update(status=Order.Status.PAID):
                raise OrderNotPayable("This order is already paid.")
            order.status = Order.Status.PAID
            payment = Payment.objects.create(order=order, amount=order.total, card_last4=last4, succeeded=True)
            event = Event(PaymentSucceeded(order_id=str(order.id), amount=order.total, card_last4=last4))
        outbox.enqueue(event)
    return payment
