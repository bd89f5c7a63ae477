from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from contract.events import Event, OrderLine, OrderPlaced, PaymentSucceeded
from deliveries.models import Delivery
from deliveries.projection import DeliveryProjection
from eventing.projection import ConsumedEvent
from harness.factories import CourierFactory, DishFactory, UserFactory
from harness.web import logged_in, pay_order, place_order


@pytest.mark.django_db(transaction=True)
@pytest.mark.db_write
def test_a_paid_order_reaches_the_courier_page_through_kafka(client, kafka):
    pizza = DishFactory(name="Margherita")
    beer = DishFactory(name="Birra")
    paid = place_order(client, {pizza: 2, beer: 1}, name="Ada", address="Via Roma 1, Milano")
    pay_order(client, paid)
    unpaid = place_order(client, {pizza: 1}, name="Bob", address="Corso Como 5")
    courier = logged_in(CourierFactory())

    assert paid not in courier.get("/courier/").content.decode()  # nothing consumed yet: the view does not write it
    stats = kafka.drain(DeliveryProjection())
    page = courier.get("/courier/").content.decode()

    assert stats.applied == 3
    assert f'data-order-id="{paid}"' in page
    assert "Via Roma 1, Milano" in page
    assert "2 × Margherita, 1 × Birra" in page
    assert unpaid not in page
    assert "Corso Como 5" not in page


@pytest.mark.django_db
def test_the_courier_page_needs_a_courier_login(client):
    assert client.get("/courier/")["Location"].startswith("/accounts/login/")
    assert logged_in(UserFactory()).get("/courier/").status_code == 403
    assert logged_in(CourierFactory()).get("/courier/").status_code == 200


def consumed(payload, offset: int) -> ConsumedEvent:
    topic = payload.TOPIC
    return ConsumedEvent(topic, 0, offset, Event(payload, occurred_at=datetime(2026, 1, 1, 12, tzinfo=UTC)))


@pytest.mark.django_db
@pytest.mark.db_write
def test_payment_read_before_its_order_still_makes_one_delivery():
    order_id = str(uuid.uuid4())
    placed = OrderPlaced(
        order_id, "Ada", "Via Roma 1", [OrderLine(1, "Margherita", 2, Decimal("8.5"), Decimal("2"))], Decimal("17")
    )
    paid = PaymentSucceeded(order_id, Decimal("17"), "4242")
    projection = DeliveryProjection()

    projection.apply([consumed(paid, 0)])
    assert not Delivery.objects.filter(placed_at__isnull=False).exists()
    projection.apply([consumed(placed, 0)])
    projection.apply([consumed(placed, 0), consumed(paid, 0)])  # a replayed duplicate changes nothing

    delivery = Delivery.objects.get()
    assert (delivery.address, delivery.items, delivery.total) == (
        "Via Roma 1",
        [{"name": "Margherita", "quantity": 2}],
        Decimal("17"),
    )
    assert delivery.paid_at is not None
