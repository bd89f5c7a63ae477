"""The shared consumer runner on the real broker: offsets, dead letters, resuming."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from contract.events import Event, OrderPlaced
from eventing.models import ConsumerOffset
from eventing.producer import get_publisher
from eventing.projection import ConsumedEvent, Projection
from eventing.topics import ORDERS, PAYMENTS, group_name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


class RecordingProjection(Projection):
    """Keeps what it applied; refuses orders whose customer is named "boom"."""

    group = "recorder"
    topics = (ORDERS, PAYMENTS)
    handles = (OrderPlaced,)

    def __init__(self) -> None:
        self.applied: list[str] = []

    def reset(self) -> None:
        self.applied.clear()

    def apply(self, events: list[ConsumedEvent]) -> None:
        for consumed in events:
            if consumed.payload.customer_name == "boom":
                raise ValueError("the kitchen is on fire")
        # Only what survives the transaction is "applied": record after the checks.
        self.applied.extend(e.payload.order_id for e in events)


def publish_order(customer: str = "Ada") -> str:
    order_id = str(uuid.uuid4())
    get_publisher().publish(Event(OrderPlaced(order_id, customer, "Via Roma 1", [], Decimal("0"))))
    return order_id


def test_poison_events_go_to_the_dead_letter_topic_with_the_error_and_the_stream_goes_on(kafka):
    good_before = publish_order()
    kafka.produce_raw(ORDERS, b"k1", b"{not json")
    kafka.produce_raw(
        ORDERS, b"k2", b'{"id": "1", "type": "order.eaten", "version": 1, "occurred_at": "x", "data": {}}'
    )
    kafka.produce_raw(
        PAYMENTS,
        b"k3",
        b'{"id": "0b9f6c1e-3c5a-4d0e-9a57-2f1f0c8d6e11", "type": "payment.succeeded", "version": 1, '
        b'"occurred_at": "2026-01-01T00:00:00+00:00", "data": {"order_id": "5f0c1d9e-0000-4000-8000-000000000003"}}',
    )
    failing = publish_order("boom")
    good_after = publish_order()
    projection = RecordingProjection()

    stats = kafka.drain(projection)

    assert sorted(projection.applied) == sorted([good_before, good_after])
    assert stats.dead_lettered == 4
    orders_dlq = kafka.read_topic("orders.dlq")
    payments_dlq = kafka.read_topic("payments.dlq")
    assert sorted(m.key() for m in orders_dlq) == sorted([b"k1", b"k2", failing.encode()])
    [payment_letter] = payments_dlq
    headers = dict(payment_letter.headers())
    assert headers["dlq.error"] == b"data.amount is missing"
    assert headers["dlq.topic"].endswith(b"payments")
    assert int(headers["dlq.offset"]) == 0
    fire = dict(next(m for m in orders_dlq if m.key() == failing.encode()).headers())
    assert fire["dlq.error"] == b"ValueError: the kitchen is on fire"
    assert fire["content-type"] == b"application/json"  # the original headers travel along


def test_a_group_resumes_from_the_offsets_stored_with_its_projection(kafka):
    first = [publish_order() for _ in range(5)]
    projection = RecordingProjection()
    kafka.drain(projection)
    second = [publish_order() for _ in range(3)]

    again = RecordingProjection()
    kafka.drain(again)

    assert sorted(projection.applied) == sorted(first)
    assert sorted(again.applied) == sorted(second)
    stored = ConsumerOffset.objects.filter(group=group_name("recorder"), topic=ORDERS)
    assert sum(row.next_offset for row in stored) == 8


def test_kafka_sees_the_groups_committed_offsets_too(kafka):
    for _ in range(4):
        publish_order()
    kafka.drain(RecordingProjection())

    from confluent_kafka import Consumer, TopicPartition

    from eventing.topics import topic_name

    probe = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group_name("recorder")})
    try:
        committed = probe.committed(
            [TopicPartition(topic_name(ORDERS), p) for p in range(kafka.partitions)], timeout=10
        )
    finally:
        probe.close()
    assert sum(max(tp.offset, 0) for tp in committed) == 4
