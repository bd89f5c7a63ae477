from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from contract.events import Event, OrderLine, OrderPlaced, PaymentSucceeded
from deliveries.models import Delivery
from deliveries.projection import DeliveryProjection
from deliveries.selectors import OPEN_ON_COURIER_PAGE
from eventing.projection import ConsumedEvent
from harness.factories import CourierFactory, DeliveryFactory, DishFactory, UserFactory
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
def test_a_courier_sees_their_own_deliveries_and_the_oldest_open_ones_not_the_backlog():
    ada = CourierFactory(username="ada")
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    backlog = [DeliveryFactory(paid_at=start + timedelta(minutes=n)) for n in range(OPEN_ON_COURIER_PAGE + 5)]
    adas = DeliveryFactory(status=Delivery.Status.CLAIMED, courier="ada", customer_name="Ada under way")
    DeliveryFactory(status=Delivery.Status.OUT_FOR_DELIVERY, courier="bob", customer_name="Bob under way")
    DeliveryFactory(status=Delivery.Status.DELIVERED, courier="ada", customer_name="Delivered already")

    page = logged_in(ada).get("/courier/").content.decode()

    listed = re.findall(r'data-live-id="([^"]+)"', page)
    oldest = [str(d.order_id) for d in backlog[:OPEN_ON_COURIER_PAGE]]
    assert listed == [str(adas.order_id), *oldest]  # hers first, then the oldest open in payment order
    assert f"{OPEN_ON_COURIER_PAGE + 5} open deliveries: the oldest {OPEN_ON_COURIER_PAGE} below" in page
    assert "Bob under way" not in page
    assert "Delivered already" not in page

    everything = logged_in(ada).get("/courier/open/").content.decode()
    assert re.findall(r'data-live-id="([^"]+)"', everything) == [str(d.order_id) for d in backlog]


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
