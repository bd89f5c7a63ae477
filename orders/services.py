"""Write paths for orders: placing and paying. Each publishes its event after the commit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from contract.events import Event, OrderPlaced, PaymentFailed, PaymentSucceeded
from contract.events import OrderLine as OrderLineEvent
from eventing import outbox
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

    `menu`: the ordered dishes as the caller just read them (the order form did, to check
    the cart), so that they are not read twice; read here when not given.

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
    dishes = menu if menu is not None else Dish.objects.in_bulk([item.dish_id for item in items])
    unknown = [item.dish_id for item in items if item.dish_id not in dishes or not dishes[item.dish_id].is_available]
    if unknown:
        raise ValidationError(f"Unknown dish: {unknown[0]}.")

    try:
        with transaction.atomic():
            total = sum((dishes[i.dish_id].price * i.quantity for i in items), Decimal("0"))
            order = Order.objects.create(
                customer_name=customer_name,
                address=address,
                email=email or "",
                total=total,
                idempotency_key=idempotency_key or None,
            )
            lines = OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    dish=dishes[i.dish_id],
                    name=dishes[i.dish_id].name,
                    quantity=i.quantity,
                    unit_price=dishes[i.dish_id].price,
                    unit_cost=dishes[i.dish_id].food_cost,
                )
                for i in items
            )
            event = Event(
                OrderPlaced(
                    order_id=str(order.id),
                    customer_name=customer_name,
                    address=address,
                    lines=[
                        OrderLineEvent(ln.dish_id, ln.name, ln.quantity, ln.unit_price, ln.unit_cost) for ln in lines
                    ],
                    total=total,
                    email=email or None,
                )
            )
            outbox.enqueue(event)
    except IntegrityError:
        if not idempotency_key:
            raise
        # The same form submitted twice (at the same instant, or its answer lost): the first made it.
        existing = Order.objects.prefetch_related("lines").get(idempotency_key=idempotency_key)
        if not _is_the_order(existing, customer_name, address, email or "", items):
            raise OrderFormReused() from None
        return existing
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
