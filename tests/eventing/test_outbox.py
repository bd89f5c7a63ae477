"""The transactional outbox on the real broker: Kafka down, delivery reports, double submits;
relay passes at once while Kafka holds its acknowledgements, and one that dies mid-pass."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from devstack.kafka_node import free_port
from eventing.models import OutboxEvent
from eventing.outbox import claim_pending, relay_pending, relay_publisher
from eventing.producer import get_publisher, reset_publisher
from eventing.projection import decode_message
from harness.factories import DishFactory
from harness.kafka_support import KafkaTestBed, silent_broker
from harness.processes import Services
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


# -- Relay passes at once: the rows a pass sends are claimed --------------------------------------


def orders_waiting_in_the_outbox(client: Client, kafka: KafkaTestBed, settings, count: int) -> list[str]:
    """Orders placed while Kafka was down, as if their web process then died: their events are
    in the outbox only, for the relay. The process's producer then points at the real broker."""
    dish = DishFactory()
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nobody listens there
    reset_publisher()
    order_ids = [place_order(client, {dish: 1}) for _ in range(count)]
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka.bootstrap_servers
    reset_publisher(flush_timeout=0)  # what the dead process had queued is gone
    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == count
    return order_ids


def copies_on_the_topic(kafka: KafkaTestBed, logical: str) -> Counter[str]:
    """How many messages of each event id the topic holds."""
    return Counter(decode_message(m).id for m in kafka.read_topic(logical))


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_two_relay_passes_at_once_send_each_event_once_while_the_broker_answers_nothing(
    client, kafka_on_node, settings
):
    """Two worker threads, each running a pass, while the broker holds every request: the second
    pass starts while the first still waits for its acknowledgements (beat queues a pass every
    few seconds whatever Kafka does). Before the claims, both sent every unsent event, and the
    broker, going on, appended both sends. The broker is frozen for well under a second (were the
    machine so slow that it took 5 s, the broker would be fenced, then back: the same outcome)."""
    kafka = kafka_on_node
    orders = orders_waiting_in_the_outbox(client, kafka, settings, 5)
    producer = relay_publisher().producer
    results: dict[str, int] = {}

    def relay(name: str) -> None:
        try:
            results[name] = relay_pending(older_than=timedelta(0))
        finally:
            connections.close_all()  # this thread's connection

    first = threading.Thread(target=relay, args=("first",))
    second = threading.Thread(target=relay, args=("second",))
    with kafka.frozen():
        first.start()
        wait_until(lambda: len(producer) == len(orders), 30, "the first pass never sent its events")
        second.start()
        # The second pass is done (it found nothing to send), or it has sent them again.
        wait_until(lambda: not second.is_alive() or len(producer) > len(orders), 30, "the second pass never ran")
        in_flight_while_frozen = len(producer)
    first.join(60)
    second.join(60)

    assert in_flight_while_frozen == len(orders), "the second pass sent events the first one was sending"
    assert results == {"first": len(orders), "second": 0}
    assert sorted(copies_on_the_topic(kafka, "orders").values()) == [1] * len(orders)
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()


def test_passes_claiming_at_the_same_instant_take_different_rows():
    """The claim's own race, four passes at once (their own threads and connections): on
    PostgreSQL SKIP LOCKED, on SQLite writers in turn."""
    rows = [
        OutboxEvent.objects.create(id=uuid.uuid4(), topic="orders", key=f"order-{n}", event_type="t", value=b"{}")
        for n in range(40)
    ]
    passes = 4
    together = threading.Barrier(passes)

    def claim(_: int) -> list[uuid.UUID]:
        together.wait()
        try:
            return [row.id for row in claim_pending(uuid.uuid4(), timedelta(0), limit=10)]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(passes) as pool:
        claims = list(pool.map(claim, range(passes)))

    claimed = [event for events in claims for event in events]
    assert sorted(claimed) == sorted(row.id for row in rows)  # each row once, by one pass
    assert OutboxEvent.objects.values("claimed_by").distinct().count() == passes


def test_events_a_pass_could_not_deliver_are_left_to_the_next_pass_at_once(client, kafka, settings):
    orders = orders_waiting_in_the_outbox(client, kafka, settings, 3)
    with silent_broker() as hung:
        settings.KAFKA_BOOTSTRAP_SERVERS = hung
        settings.OUTBOX_RELAY_LEASE_S = 2  # the relay's producer gives up after 1 s
        reset_publisher()
        assert relay_pending(older_than=timedelta(0)) == 0
        reset_publisher()

    # Released, not left to expire: an expired claim would still name its pass.
    assert OutboxEvent.objects.filter(sent_at__isnull=True, claimed_by__isnull=True).count() == len(orders)
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka.bootstrap_servers
    settings.OUTBOX_RELAY_LEASE_S = 60
    assert relay_pending(older_than=timedelta(0)) == len(orders)
    assert sorted(copies_on_the_topic(kafka, "orders").values()) == [1] * len(orders)


def database_url() -> str:
    """The test database, for a process of the project to share it."""
    db = connection.settings_dict
    if db["ENGINE"] in ("foodsite.sqlite", "django.db.backends.sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_a_relay_pass_killed_holding_its_claims_leaves_its_events_to_a_pass_after_the_lease(
    client, kafka, settings, tmp_path: Path
):
    """A real `manage.py relay_outbox --once` on the test database, its broker hung, killed
    (kill -9) while it waits for the acknowledgements: its claims stay in the rows, and once
    their lease has run out the next pass takes the events over."""
    orders = orders_waiting_in_the_outbox(client, kafka, settings, 3)
    with silent_broker() as hung:
        relay = Services(
            tmp_path,
            hung,
            database_url(),
            # Its producer would give up after 8 s, and its claims last 16 s: killed before either.
            env={"OUTBOX_RELAY_LEASE_S": "16"},
        )
        try:
            process = relay.start("relay_outbox", "--once", "--older-than", "0")
            log = relay.log_files[process.pid]
            wait_until(
                lambda: log.read_text().count(" relaying ") == len(orders) or process.poll() is not None,
                60,
                "the relay process never claimed the events",
            )
            time.sleep(0.2)  # its produce() calls follow those lines: the events are in flight
            assert process.poll() is None, log.read_text()
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            relay.close()
    [(dead_pass, lease_ends)] = set(
        OutboxEvent.objects.filter(sent_at__isnull=True).values_list("claimed_by", "claimed_until")
    )
    assert dead_pass is not None, "the relay process had let go of its claims before it was killed"

    time.sleep(max(0.0, (lease_ends - timezone.now()).total_seconds()) + 0.1)
    assert relay_pending(older_than=timedelta(0)) == len(orders)
    assert sorted(copies_on_the_topic(kafka, "orders").values()) == [1] * len(orders)
    assert not OutboxEvent.objects.filter(sent_at__isnull=True).exists()


def test_a_claim_leaves_out_the_later_events_of_a_key_another_pass_is_sending():
    """Two passes' producers may deliver in any order: a key's later event waits until the
    earlier one another pass holds is sent, so that each key stays in order on its topic."""
    now = timezone.now()

    def stored(key: str, seconds_ago: int) -> OutboxEvent:
        row = OutboxEvent.objects.create(id=uuid.uuid4(), topic="orders", key=key, event_type="t", value=b"{}")
        OutboxEvent.objects.filter(id=row.id).update(created_at=now - timedelta(seconds=seconds_ago))
        return row

    placed = stored("order-a", 30)
    assert [r.id for r in claim_pending(uuid.uuid4(), timedelta(0), limit=10)] == [placed.id]
    paid, other = stored("order-a", 20), stored("order-b", 10)

    # order-a's payment waits for its placement, which the first pass is sending
    assert [r.id for r in claim_pending(uuid.uuid4(), timedelta(0), limit=10)] == [other.id]

    OutboxEvent.objects.filter(id=placed.id).update(sent_at=timezone.now())
    assert [r.id for r in claim_pending(uuid.uuid4(), timedelta(0), limit=10)] == [paid.id]
