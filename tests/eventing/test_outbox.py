"""The transactional outbox on the real broker: Kafka down, delivery reports, double submits."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connections
from django.test import Client

from devstack.kafka_node import free_port
from eventing.models import OutboxEvent
from eventing.outbox import relay_pending
from eventing.producer import get_publisher, reset_publisher
from eventing.projection import decode_message
from harness.factories import DishFactory
from harness.web import place_order
from orders.models import Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


def test_orders_placed_while_kafka_is_down_are_received_and_relayed_once_it_is_back(client, kafka, settings):
    dish = DishFactory()
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nobody listens there
    reset_publisher()

    order_ids = [place_order(client, {dish: 1}) for _ in range(3)]  # each answered "received"

    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == 3
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka.bootstrap_servers
    reset_publisher(flush_timeout=0)  # what the dead process had queued is gone, as after a crash
    assert kafka.read_topic("orders") == []

    assert relay_pending(older_than=timedelta(0)) == 3
    assert relay_pending(older_than=timedelta(0)) == 0  # nothing is sent twice

    messages = kafka.read_topic("orders")
    assert sorted(m.key().decode() for m in messages) == sorted(order_ids)
    assert {decode_message(m).id for m in messages} == {str(row.id) for row in OutboxEvent.objects.all()}
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()


def test_the_delivery_report_marks_the_event_sent_without_the_relay(client, kafka):
    place_order(client, {DishFactory(): 2})
    assert get_publisher().flush(10) == 0

    deadline = time.monotonic() + 10
    while OutboxEvent.objects.filter(sent_at__isnull=True).exists():
        assert time.monotonic() < deadline, "delivered event never marked sent"
        time.sleep(0.1)
    assert relay_pending(older_than=timedelta(0)) == 0


def test_submitting_the_same_order_form_twice_orders_once(client, kafka):
    dish = DishFactory()
    key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', client.get("/").content.decode()).group(1)
    form = {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish.pk}": "2", "idempotency_key": key}

    first = client.post("/", form)
    second = client.post("/", form)  # a double click, or the browser retrying

    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert Order.objects.count() == 1
    assert len(kafka.read_topic("orders")) == 1


def test_the_same_form_sent_again_with_other_details_is_refused_and_can_then_order(client, kafka):
    """The page went back in history and its cart changed, or the key is someone else's: the key
    is another order's, which is not handed over; the form comes back with a new key."""
    dish = DishFactory()
    key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', client.get("/").content.decode()).group(1)
    form = {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish.pk}": "2", "idempotency_key": key}
    placed = client.post("/", form)

    stranger = Client()
    refused = stranger.post("/", {**form, "customer_name": "Mallory", f"qty-{dish.pk}": "3"})

    assert refused.status_code == 400
    page = refused.content.decode()
    assert "already used for another order" in page
    assert "Ada" not in page
    assert placed["Location"] not in page
    assert "orders" not in stranger.cookies
    new_key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', page).group(1)
    assert new_key != key
    again = stranger.post("/", {**form, "customer_name": "Mallory", f"qty-{dish.pk}": "3", "idempotency_key": new_key})
    assert again.status_code == 302
    assert again["Location"] != placed["Location"]
    assert sorted(Order.objects.values_list("customer_name", flat=True)) == ["Ada", "Mallory"]
    assert len(kafka.read_topic("orders")) == 2


def test_the_same_order_form_submitted_at_the_same_instant_orders_once(client, kafka):
    """The idempotency key's race: requests in flight together (each its own thread and database
    connection, as under daphne), so that on PostgreSQL their INSERTs really overlap."""
    dish = DishFactory()
    key = re.search(r'name="idempotency_key" value="([0-9a-f]+)"', client.get("/").content.decode()).group(1)
    form = {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish.pk}": "2", "idempotency_key": key}
    copies = 4
    together = threading.Barrier(copies)

    def submit(_: int):
        browser = Client()
        browser.cookies = client.cookies  # the same customer's retries
        together.wait()
        try:
            return browser.post("/", form)
        finally:
            connections.close_all()  # this thread's connection

    with ThreadPoolExecutor(copies) as pool:
        responses = list(pool.map(submit, range(copies)))

    assert [r.status_code for r in responses] == [302] * copies
    assert len({r["Location"] for r in responses}) == 1
    assert Order.objects.count() == 1
    assert len(kafka.read_topic("orders")) == 1
