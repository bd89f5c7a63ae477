"""Avro and JSON events side by side on the real broker: every consumer reads both formats
from the same topics (as during a switch of EVENT_FORMAT), the web publishes Avro when told
to, the outbox keeps each event's content type, and a bad Avro body is dead-lettered."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from confluent_kafka import Producer
from django.apps import apps

from contract import avro
from contract.events import (
    CONTENT_TYPE_AVRO,
    DeliveryClaimed,
    DeliveryDelivered,
    DeliveryPickedUp,
    Event,
    OrderLine,
    OrderPlaced,
    PaymentSucceeded,
    decode,
    encode,
)
from deliveries.models import Delivery
from deliveries.projection import DeliveryProjection
from devstack.kafka_node import free_port
from eventing.models import OutboxEvent
from eventing.outbox import relay_pending
from eventing.producer import get_publisher, reset_publisher
from eventing.projection import ConsumedEvent, Projection
from eventing.topics import ORDERS, SOURCE_TOPICS, topic_name
from harness.factories import DishFactory
from harness.web import pay_order, place_order
from stats.projection import SalesProjection
from stats.selectors import dish_sales, sales_totals

pytestmark = pytest.mark.django_db(transaction=True)


def app_projections() -> list[type[Projection]]:
    """Every consumer of the project: the Projection subclasses defined in an installed app's
    `projection` module, so a consumer added later is covered without editing this test."""
    for config in apps.get_app_configs():
        if importlib.util.find_spec(f"{config.name}.projection") is not None:
            importlib.import_module(f"{config.name}.projection")
    found: set[type[Projection]] = set()

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            config = apps.get_containing_app_config(sub.__module__)
            if config is not None and sub.__module__ == f"{config.name}.projection" and not inspect.isabstract(sub):
                found.add(sub)
            walk(sub)

    walk(Projection)
    return sorted(found, key=lambda cls: cls.group)


def test_the_known_consumers_are_found():
    # If discovery broke, the parametrized test below would silently cover less.
    assert {DeliveryProjection, SalesProjection} <= set(app_projections())


PIZZA, TIRAMISU = 9101, 9102


def order_story(name: str) -> list[Event]:
    """An order's whole life: placed, paid, claimed, picked up, delivered."""
    order_id = str(uuid.uuid4())
    lines = [
        OrderLine(PIZZA, "Margherita", 2, Decimal("8.50"), Decimal("2.40")),
        OrderLine(TIRAMISU, "Tiramisù", 1, Decimal("5.00"), Decimal("1.50")),
    ]
    return [
        Event(OrderPlaced(order_id, name, "Via Roma 1", lines, Decimal("22.00"), email=f"{name.lower()}@example.com")),
        Event(PaymentSucceeded(order_id, Decimal("22.00"), "4242")),
        Event(DeliveryClaimed(order_id, "courier")),
        Event(DeliveryPickedUp(order_id, "courier")),
        Event(DeliveryDelivered(order_id, "courier")),
    ]


def publish(events: list[Event], fmt: str) -> None:
    publisher = get_publisher()
    for event in events:
        value, content_type = encode(event, fmt)
        publisher.publish_encoded(event.payload.TOPIC, event.key, value, event.type, content_type=content_type)


def order_of(events: list[Event]) -> str:
    return events[0].payload.order_id


# What each known consumer must have made of the two orders (one JSON, one Avro); a consumer
# not listed here is still checked for applying every event it handles, unchanged.
def deliveries_outcome(json_order: str, avro_order: str) -> None:
    for order_id, name in ((json_order, "Jay"), (avro_order, "Ava")):
        delivery = Delivery.objects.get(order_id=order_id)
        assert (delivery.customer_name, delivery.total) == (name, Decimal("22.00"))
        assert delivery.items == [{"name": "Margherita", "quantity": 2}, {"name": "Tiramisù", "quantity": 1}]
        assert delivery.paid_at is not None


def stats_outcome(json_order: str, avro_order: str) -> None:
    totals = sales_totals()
    assert (totals.orders, totals.revenue) == (2, Decimal("44.00"))
    assert totals.food_cost == Decimal("2") * (2 * Decimal("2.40") + Decimal("1.50"))
    assert {(d.dish_id, d.quantity) for d in dish_sales()} == {(PIZZA, 4), (TIRAMISU, 2)}


def notifications_outcome(json_order: str, avro_order: str) -> None:
    recipient = apps.get_model("notifications", "Recipient")
    notification = apps.get_model("notifications", "Notification")
    for order_id, email in ((json_order, "jay@example.com"), (avro_order, "ava@example.com")):
        assert recipient.objects.get(order_id=order_id).email == email  # the optional field travels
        assert notification.objects.filter(order_id=order_id).count() == 4  # received, paid, out, delivered


def recommendations_outcome(json_order: str, avro_order: str) -> None:
    pair = apps.get_model("recommendations", "DishPair")
    assert pair.objects.get(dish_a=PIZZA, dish_b=TIRAMISU).orders == 2


OUTCOMES: dict[str, Callable[[str, str], None]] = {
    "deliveries": deliveries_outcome,
    "stats": stats_outcome,
    "notifications": notifications_outcome,
    "recommendations": recommendations_outcome,
}


def event_projections() -> list[type[Projection]]:
    # The dead-letter recorder reads the .dlq topics and decodes nothing (its page does:
    # tests/deadletters); every consumer of the event topics is covered.
    return [cls for cls in app_projections() if set(cls.topics) & set(SOURCE_TOPICS)]


@pytest.mark.parametrize("projection_cls", event_projections(), ids=lambda cls: cls.group)
def test_an_avro_and_a_json_order_in_the_same_topics_are_both_consumed(kafka, settings, projection_cls):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # a consumer that sends by Celery sends in-process
    json_story, avro_story = order_story("Jay"), order_story("Ava")
    publish(json_story, "json")
    publish(avro_story, "avro")
    applied: list[Event] = []

    class Recording(projection_cls):
        def apply(self, events: list[ConsumedEvent]) -> None:
            super().apply(events)
            applied.extend(consumed.event for consumed in events)  # only what did not raise

    stats = kafka.drain(Recording())

    assert stats.dead_lettered == 0
    expected = [
        event
        for event in json_story + avro_story
        if event.payload.TOPIC in projection_cls.topics and isinstance(event.payload, projection_cls.handles)
    ]
    assert any(event in applied for event in avro_story), "no Avro event reached this consumer"
    assert sorted(applied, key=lambda e: e.id) == sorted(expected, key=lambda e: e.id)
    outcome = OUTCOMES.get(projection_cls.group)
    if outcome is not None:
        outcome(order_of(json_story), order_of(avro_story))


def test_an_order_placed_on_the_web_with_event_format_avro_reaches_kafka_and_the_consumers_as_avro(
    client, kafka, settings
):
    settings.EVENT_FORMAT = "avro"
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"), food_cost=Decimal("2.40"))
    order_id = place_order(client, {pizza: 2})
    pay_order(client, order_id)

    [order_message] = kafka.read_topic("orders")
    [payment_message] = kafka.read_topic("payments")
    for message in (order_message, payment_message):
        headers = dict(message.headers())
        assert headers["content-type"] == CONTENT_TYPE_AVRO.encode()
        assert message.value().startswith(avro.MARKER)
    assert dict(order_message.headers())["event-type"] == b"order.placed"
    placed = decode(order_message.value(), CONTENT_TYPE_AVRO).payload
    assert (placed.order_id, placed.total, placed.lines[0].quantity) == (order_id, Decimal("17.00"), 2)
    assert set(OutboxEvent.objects.values_list("content_type", flat=True)) == {CONTENT_TYPE_AVRO}

    kafka.drain(DeliveryProjection())
    kafka.drain(SalesProjection())

    delivery = Delivery.objects.get(order_id=order_id)
    assert (delivery.customer_name, delivery.total, delivery.paid_at is not None) == ("Ada", Decimal("17.00"), True)
    assert (sales_totals().orders, sales_totals().revenue) == (1, Decimal("17.00"))


@pytest.mark.db_write
def test_the_outbox_relays_an_event_with_the_content_type_it_was_stored_with(client, kafka, settings):
    settings.EVENT_FORMAT = "avro"
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # Kafka down: the event waits
    reset_publisher()
    order_id = place_order(client, {DishFactory(): 1})

    # The deployment switches back to JSON before the relay gets to the stored Avro event.
    settings.EVENT_FORMAT = "json"
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka.bootstrap_servers
    reset_publisher(flush_timeout=0)
    assert relay_pending(older_than=timedelta(0)) == 1

    [message] = kafka.read_topic("orders")
    assert dict(message.headers())["content-type"] == CONTENT_TYPE_AVRO.encode()
    assert decode(message.value(), CONTENT_TYPE_AVRO).payload.order_id == order_id
    kafka.drain(DeliveryProjection())
    assert Delivery.objects.filter(order_id=order_id).exists()


def produce_with_content_type(kafka, key: bytes, value: bytes, content_type: str) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "murmur2_random"})
    producer.produce(topic_name(ORDERS), key=key, value=value, headers=[("content-type", content_type)])
    assert producer.flush(10) == 0


def test_bad_avro_bodies_and_unknown_content_types_go_to_the_dead_letter_topic_with_the_reason(kafka):
    good = order_story("Ava")[0]
    good_avro = good.to_avro()
    produce_with_content_type(kafka, b"garbled", good_avro[:10] + b"\xff" * 30, CONTENT_TYPE_AVRO)
    produce_with_content_type(kafka, b"stranger", b"\xc3\x01" + bytes(8) + b"\x02", CONTENT_TYPE_AVRO)
    produce_with_content_type(kafka, b"json-as-avro", good.to_json(), CONTENT_TYPE_AVRO)
    produce_with_content_type(kafka, b"plain", b"an order", "text/plain")
    publish([good], "avro")  # the stream goes on after them
    later = order_story("Jay")[0]
    publish([later], "json")

    stats = kafka.drain(DeliveryProjection())

    assert stats.dead_lettered == 4
    assert set(Delivery.objects.values_list("customer_name", flat=True)) == {"Ava", "Jay"}
    letters = {m.key(): dict(m.headers()) for m in kafka.read_topic("orders.dlq")}
    assert letters[b"garbled"]["dlq.error"].startswith(b"bad Avro body for order.placed.v1: ")
    assert letters[b"stranger"]["dlq.error"] == b"unknown Avro schema fingerprint 0000000000000000"
    assert letters[b"json-as-avro"]["dlq.error"].startswith(b"not Avro single-object encoding")
    assert letters[b"plain"]["dlq.error"] == b"unknown content type 'text/plain'"
    # The original header travels with the dead letter: whoever inspects it knows the format.
    assert letters[b"garbled"]["content-type"] == CONTENT_TYPE_AVRO.encode()
