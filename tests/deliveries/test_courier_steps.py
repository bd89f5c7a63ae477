"""Couriers move a delivery along from the courier page: each step is a delivery-status
event on the real broker, and the delivery service's projection (not the web) records it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from contract.events import DeliveryClaimed, DeliveryDelivered, DeliveryPickedUp, Event
from deliveries.models import Delivery
from deliveries.projection import DeliveryProjection
from eventing.projection import ConsumedEvent, decode_message
from harness.factories import CourierFactory, DishFactory, UserFactory
from harness.web import logged_in, pay_order, place_order


def step(client, order_id: str, name: str):
    return client.post(f"/courier/{order_id}/{name}/")


@pytest.fixture
def paid_delivery(client, kafka):
    order_id = place_order(client, {DishFactory(name="Margherita"): 1})
    pay_order(client, order_id)
    kafka.drain(DeliveryProjection())
    return order_id


@pytest.mark.django_db(transaction=True)
@pytest.mark.db_write
def test_claim_pick_up_deliver_flow_through_kafka_to_the_customer(client, kafka, paid_delivery):
    order_id = paid_delivery
    courier = logged_in(CourierFactory())

    assert step(courier, order_id, "claim").status_code == 302
    assert Delivery.objects.get(order_id=order_id).status == Delivery.Status.TO_DELIVER  # the web did not write it
    kafka.drain(DeliveryProjection())
    row = Delivery.objects.get(order_id=order_id)
    assert (row.status, row.courier) == (Delivery.Status.CLAIMED, "courier")
    assert "Picked up</button>" in courier.get("/courier/").content.decode()

    assert step(courier, order_id, "pick-up").status_code == 302
    kafka.drain(DeliveryProjection())
    assert 'id="order-status">Out for delivery<' in client.get(f"/orders/{order_id}/").content.decode()

    assert step(courier, order_id, "deliver").status_code == 302
    kafka.drain(DeliveryProjection())
    assert 'id="order-status">Delivered<' in client.get(f"/orders/{order_id}/").content.decode()
    assert f'data-order-id="{order_id}"' not in courier.get("/courier/").content.decode()

    events = [decode_message(m) for m in kafka.read_topic("delivery-status")]
    assert [(e.type, e.payload.order_id, e.payload.courier) for e in events] == [
        ("delivery.claimed", order_id, "courier"),
        ("delivery.picked_up", order_id, "courier"),
        ("delivery.delivered", order_id, "courier"),
    ]
    assert {m.key().decode() for m in kafka.read_topic("delivery-status")} == {order_id}


@pytest.mark.django_db(transaction=True)
@pytest.mark.db_write
def test_steps_out_of_turn_are_refused_with_the_reason(client, kafka, paid_delivery):
    order_id = paid_delivery
    first = logged_in(CourierFactory())
    other = logged_in(CourierFactory(username="bruno"))

    refused = step(first, order_id, "deliver")
    assert refused.status_code == 409
    assert "not yours: claim it first" in refused.content.decode()

    step(first, order_id, "claim")
    kafka.drain(DeliveryProjection())
    refused = step(other, order_id, "claim")
    assert refused.status_code == 409
    assert "Already claimed by courier" in refused.content.decode()
    assert step(other, order_id, "pick-up").status_code == 409
    assert step(first, order_id, "fly").status_code == 404
    assert step(first, uuid.uuid4(), "claim").status_code == 409  # no such delivery
    assert len(kafka.read_topic("delivery-status")) == 1  # only the accepted claim went out


@pytest.mark.django_db
def test_courier_steps_need_a_courier_and_a_post(client):
    order_id = uuid.uuid4()
    assert step(client, order_id, "claim")["Location"].startswith("/accounts/login/")
    assert step(logged_in(UserFactory()), order_id, "claim").status_code == 403
    assert logged_in(CourierFactory()).get(f"/courier/{order_id}/claim/").status_code == 405


def consumed(payload, offset: int) -> ConsumedEvent:
    return ConsumedEvent("delivery-status", 0, offset, Event(payload, occurred_at=datetime(2026, 1, 1, tzinfo=UTC)))


@pytest.mark.django_db
@pytest.mark.db_write
def test_the_first_claim_in_the_log_wins_and_only_its_courier_moves_on():
    order_id = str(uuid.uuid4())
    projection = DeliveryProjection()
    # Two couriers claimed at the same instant: both passed the web's check.
    projection.apply([consumed(DeliveryClaimed(order_id, "ada"), 0), consumed(DeliveryClaimed(order_id, "bruno"), 1)])
    projection.apply([consumed(DeliveryPickedUp(order_id, "bruno"), 2)])
    assert (Delivery.objects.get().courier, Delivery.objects.get().status) == ("ada", Delivery.Status.CLAIMED)

    projection.apply([consumed(DeliveryPickedUp(order_id, "ada"), 3), consumed(DeliveryDelivered(order_id, "ada"), 4)])
    projection.apply([consumed(DeliveryPickedUp(order_id, "ada"), 3)])  # replayed duplicate
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.picked_up_at is not None) == (Delivery.Status.DELIVERED, True)
