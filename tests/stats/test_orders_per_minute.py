"""Orders per minute: a paid order counts once, in the minute of its payment event."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from contract.events import Event, OrderLine, OrderPlaced, PaymentSucceeded
from eventing.projection import ConsumedEvent
from harness.factories import DishFactory, StaffFactory
from harness.web import logged_in, pay_order, place_order
from stats.models import OrdersPerMinute
from stats.projection import SalesProjection
from stats.selectors import orders_per_minute

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def order(order_id: str) -> Event:
    line = OrderLine(1, "Margherita", 1, Decimal("8.50"), Decimal("2.40"))
    return Event(
        OrderPlaced(order_id, "Ada", "Via Roma 1", [line], Decimal("8.50")), occurred_at=T0 - timedelta(hours=1)
    )


def payment(order_id: str, at: datetime) -> Event:
    return Event(PaymentSucceeded(order_id, Decimal("8.50"), "4242"), occurred_at=at)


def apply(*batch: Event) -> None:
    SalesProjection().apply([ConsumedEvent(e.payload.TOPIC, 0, 0, e) for e in batch])


def minutes() -> dict[str, int]:
    return {f"{row.minute:%H:%M}": row.orders for row in OrdersPerMinute.objects.order_by("minute")}


@pytest.mark.django_db
@pytest.mark.db_write
def test_paid_orders_are_counted_in_the_minute_of_their_payment():
    a, b, c, d, unpaid = (str(uuid.uuid4()) for _ in range(5))
    apply(order(a), order(b), order(c), order(unpaid))
    apply(payment(a, T0 + timedelta(seconds=5)), payment(b, T0 + timedelta(seconds=59, microseconds=999_999)))
    apply(payment(c, T0 + timedelta(minutes=1)))  # 10:01:00 sharp is the next minute
    # Paid before its order.placed is read (another topic): counted when the order comes, at
    # the payment's minute, not the order's.
    apply(payment(d, T0 + timedelta(minutes=2, seconds=30)))
    assert minutes() == {"10:00": 2, "10:01": 1}
    apply(order(d))
    # Duplicates and a payment time in another time zone (same instant as 10:01:00 UTC).
    apply(order(a), payment(a, T0), payment(c, datetime.fromisoformat("2026-11-25T11:01:00+01:00")))

    assert minutes() == {"10:00": 2, "10:01": 1, "10:02": 1}
    assert "09:00" not in minutes()  # the orders' own time is not used


@pytest.mark.django_db
@pytest.mark.db_write
def test_the_chart_covers_the_last_60_minutes_with_empty_minutes_as_zero():
    a, b, old = (str(uuid.uuid4()) for _ in range(3))
    apply(order(a), order(b), order(old))
    apply(payment(a, T0 + timedelta(seconds=1)), payment(b, T0 + timedelta(minutes=59, seconds=40)))
    apply(payment(old, T0 - timedelta(minutes=1)))  # 61 minutes before "now": off the chart

    series = orders_per_minute(now=T0 + timedelta(minutes=59, seconds=59))

    assert len(series) == 60
    assert (series[0].minute, series[-1].minute) == (T0, T0 + timedelta(minutes=59))
    assert [n for _, n in series] == [1] + [0] * 58 + [1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.db_write
def test_the_page_charts_orders_paid_now_and_a_replay_rebuilds_the_minutes(client, kafka):
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"))
    salad = DishFactory(name="Insalata", price=Decimal("6.00"))
    pay_order(client, place_order(client, {pizza: 3}))
    pay_order(client, place_order(client, {pizza: 1, salad: 2}))
    place_order(client, {salad: 5})  # not paid: not an order of the chart
    kafka.drain(SalesProjection())

    page = logged_in(StaffFactory()).get("/stats/").content.decode()
    per_minute = json.loads(page.split('<script id="orders-per-minute-data" type="application/json">')[1].split("<")[0])
    assert len(per_minute["labels"]) == len(per_minute["orders"]) == 60
    assert sum(per_minute["orders"]) == 2
    assert sum(per_minute["orders"][-2:]) == 2  # paid just now: this minute (or the last, at a boundary)
    top = json.loads(page.split('<script id="top-dishes-data" type="application/json">')[1].split("<")[0])
    assert top == {"labels": ["Margherita", "Insalata"], "quantities": [4, 2]}

    live = minutes()
    OrdersPerMinute.objects.update(orders=99)  # gone wrong
    call_command("consume_stats", "--replay", stdout=io.StringIO(), stderr=io.StringIO())
    assert minutes() == live
    assert sum(live.values()) == 2
