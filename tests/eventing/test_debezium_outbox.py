"""The Debezium outbox relay (OUTBOX_RELAY=debezium) with real processes: a Kafka Connect worker
from Maven jars with Debezium's PostgreSQL connector, reading the test database's WAL through a
replication slot, writing to the session's broker. PostgreSQL only (`make test`'s second pass)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from django.db import close_old_connections, connection
from django.test import Client

from devstack.kafka_connect import LocalConnect
from eventing import debezium
from eventing.headers import Header
from eventing.models import OutboxEvent
from eventing.projection import decode_message
from eventing.topics import topic_name
from harness.factories import DishFactory, StaffFactory
from harness.kafka_support import KafkaTestBed, murmur2_partition
from harness.web import logged_in, pay_order, place_order
from stats.models import SalesTotals
from stats.projection import SalesProjection

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


@pytest.fixture
def connect_worker(kafka: KafkaTestBed, settings, tmp_path: Path) -> Iterator[LocalConnect]:
    """A Connect worker of this test's own group (internal topics under the test's prefix),
    the connector registered and running, the web in Debezium mode. Its slot is dropped after."""
    if connection.vendor != "postgresql":
        pytest.skip("logical decoding: PostgreSQL")
    settings.OUTBOX_RELAY = "debezium"
    worker = LocalConnect(
        tmp_path / "connect",
        kafka.bootstrap_servers,
        group=f"{settings.KAFKA_TOPIC_PREFIX}connect",
        topic_prefix="",
    )
    worker.start()
    try:
        worker.wait_ready(timeout=120)
        settings.CONNECT_URL = worker.url
        debezium.register(worker.url, config=debezium.connector_config(heartbeat_ms=500))
        debezium.wait_running(worker.url, timeout=120)
        yield worker
    finally:
        worker.stop()
        deadline = time.monotonic() + 20
        while True:  # the slot is active until the walsender notices its client is gone
            try:
                debezium.drop_slot()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def read_until(kafka: KafkaTestBed, logical: str, keys: set[str], timeout: float = 90) -> list[Message]:
    """Every committed message of the topic, read until each of `keys` has arrived and then
    two seconds more (so a second copy arriving late is counted too)."""
    name = topic_name(logical)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        settled = None
        while settled is None or time.monotonic() < settled:
            messages.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
            if settled is None and keys <= {m.key().decode() for m in messages}:
                settled = time.monotonic() + 2
            assert time.monotonic() < deadline, f"{len(keys - {m.key().decode() for m in messages})} never arrived"
        return messages
    finally:
        consumer.close()


def test_the_web_writes_the_row_and_debezium_publishes_it_as_the_web_would(client, kafka, connect_worker):
    order_id = place_order(client, {DishFactory(): 2})

    [message] = read_until(kafka, "orders", {order_id})

    row = OutboxEvent.objects.exclude(event_type=debezium.HEARTBEAT_TYPE).get()
    assert row.sent_at is None  # never marked: the relay reads the WAL, not the table
    event = decode_message(message)
    assert (event.id, event.type, event.key) == (str(row.id), "order.placed", order_id)
    headers = dict(message.headers())
    assert headers[Header.EVENT_TYPE] == b"order.placed"
    assert headers[Header.CONTENT_TYPE] == row.content_type.encode()
    assert headers[Header.TRACEPARENT] == row.traceparent.encode()
    assert headers["id"] == str(row.id).encode()
    # Java's partitioner, as the web's producer uses: an order's events share a partition.
    assert message.partition() == murmur2_partition(order_id.encode(), kafka.partitions)


def test_orders_placed_while_the_worker_is_killed_reach_the_topic_and_the_projection_once(
    client, kafka, connect_worker
):
    dish = DishFactory(price=Decimal("10.00"))
    before = [place_order(client, {dish: 1}) for _ in range(10)]
    connect_worker.kill()  # kill -9, mid-stream: the first orders may or may not be out yet
    during = [place_order(client, {dish: 1}) for _ in range(10)]  # the web does not notice
    for order_id in before[:5] + during[:5]:
        pay_order(client, order_id)
    killed_at = time.monotonic()
    connect_worker.start()
    connect_worker.wait_ready(timeout=120)
    debezium.wait_running(connect_worker.url, timeout=120)

    orders = read_until(kafka, "orders", set(before + during))
    recovered_s = time.monotonic() - killed_at
    payments = read_until(kafka, "payments", set(before[:5] + during[:5]))

    copies = Counter(decode_message(m).id for m in orders + payments)
    assert sorted(m.key().decode() for m in orders) == sorted(before + during)
    assert [event_id for event_id, n in copies.items() if n > 1] == []  # doubled: none
    stored = OutboxEvent.objects.exclude(event_type=debezium.HEARTBEAT_TYPE).values_list("id", flat=True)
    assert set(copies) == {str(event_id) for event_id in stored}  # lost: none
    print(f"worker killed: {len(copies)} events, lost 0, doubled 0, all on the topics {recovered_s:.1f} s after")

    kafka.drain(SalesProjection())
    totals = SalesTotals.objects.get()
    assert (totals.orders, totals.revenue) == (10, Decimal("100.00"))


def test_the_heartbeat_moves_the_slot_past_wal_other_tables_write(kafka, connect_worker):
    """With nothing to relay, the slot would hold every byte of WAL written since: other tables
    (and other databases of the server) write on. The heartbeat's row moves it on."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE wal_filler (id serial PRIMARY KEY, padding text)")
        try:
            for _ in range(20):  # ~2 MB of WAL that the outbox's publication does not carry
                cursor.execute("INSERT INTO wal_filler (padding) SELECT repeat('x', 1000) FROM generate_series(1, 100)")
            cursor.execute("SELECT pg_current_wal_lsn()")
            [written_to] = cursor.fetchone()
            deadline = time.monotonic() + 30
            while True:
                cursor.execute(
                    "SELECT pg_wal_lsn_diff(%s, confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = %s",
                    [written_to, debezium.slot_name()],
                )
                [behind] = cursor.fetchone()
                if behind <= 0:
                    break
                assert time.monotonic() < deadline, f"the slot is still {behind} bytes behind the filler's WAL"
                time.sleep(0.5)
        finally:
            cursor.execute("DROP TABLE wal_filler")
    beats = OutboxEvent.objects.filter(event_type=debezium.HEARTBEAT_TYPE)
    assert beats.exists()
    assert not OutboxEvent.objects.exclude(event_type=debezium.HEARTBEAT_TYPE).exists()
    assert kafka.read_topic("orders") == []  # a heartbeat is not an event


def relay_on_page(staff) -> dict[str, str]:
    page = unescape(staff.get("/stats/").content.decode())
    match = re.search(r'<p id="outbox-relay"([^>]*)>(.*?)</p>', page, re.DOTALL)
    assert match, "no outbox relay on the staff page"
    return {
        **dict(re.findall(r'data-([a-z-]+)="([^"]*)"', match.group(1))),
        "text": re.sub(r"<[^>]+>", "", match.group(2)),
    }


def relay_metrics(settings) -> dict[str, float]:
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    text = Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
    return {
        name: float(value)
        for name, value in re.findall(r"^(foodsite_outbox_(?:connector|slot)\S*) (\S+)$", text, re.MULTILINE)
    }


def test_the_staff_page_and_metrics_show_the_connector_s_state_and_the_slot_s_lag(kafka, connect_worker, settings):
    staff = logged_in(StaffFactory())

    running = relay_on_page(staff)
    assert (running["connector"], running["tasks"]) == ("RUNNING", "RUNNING")
    assert int(running["slot-lag"]) >= 0
    assert "no order reaches Kafka" not in running["text"]
    metrics = relay_metrics(settings)
    assert metrics["foodsite_outbox_connector_running"] == 1
    assert metrics['foodsite_outbox_connector_state{part="connector",state="RUNNING"}'] == 1
    assert metrics['foodsite_outbox_connector_state{part="task-0",state="RUNNING"}'] == 1
    assert metrics["foodsite_outbox_slot_lag_bytes"] >= 0
    assert "foodsite_outbox_unsent" not in metrics  # rows are never marked sent in this mode

    connect_worker.kill()
    stopped = relay_on_page(staff)
    assert stopped["connector"] == "UNREACHABLE"
    assert "no order reaches Kafka until it runs" in stopped["text"]
    assert "does not answer" in stopped["text"]
    metrics = relay_metrics(settings)
    assert metrics["foodsite_outbox_connector_running"] == 0
    assert metrics['foodsite_outbox_connector_state{part="connector",state="UNREACHABLE"}'] == 1


def test_orders_taken_around_a_postgresql_restart_all_reach_the_topic_once(kafka, connect_worker, postgres_server):
    """PostgreSQL stopped and started again while orders come in: the ones the web took (it
    answered with the order's page) all reach the topic once; the ones it refused meanwhile
    exist nowhere. Debezium's task reconnects to the slot, which kept its position."""
    dish = DishFactory(price=Decimal("10.00"))
    client = Client(raise_request_exception=False)  # while the database is down the web refuses
    taken, refused = [], 0
    restart = threading.Thread(target=lambda: (postgres_server.stop(), postgres_server.start()))
    for attempt in range(150):
        if attempt == 10:
            restart.start()
        response = client.post("/", {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish.pk}": "1"})
        if response.status_code == 302:
            taken.append(response["Location"].strip("/").rsplit("/", 1)[1])
        else:
            assert response.status_code == 503, response.content.decode()[:500]  # a reason, never a 500
            assert "database does not answer" in response.content.decode()
            refused += 1
            # What Django does between two real requests (the test client does not): a
            # connection that failed and cannot be used any more is dropped, the next one opens.
            close_old_connections()
            time.sleep(0.1)
        if attempt >= 10 and not restart.is_alive() and len(taken) >= 30:
            break
        time.sleep(0.05)
    restart.join()
    postgres_server.wait_ready(timeout=60)
    assert refused > 0, "the restart happened between two orders: nothing was in flight"
    assert len(taken) >= 30, f"the web took {len(taken)} orders: it did not take orders again after the restart"

    orders = read_until(kafka, "orders", set(taken), timeout=120)

    copies = Counter(decode_message(m).key for m in orders)
    assert sorted(copies) == sorted(taken)  # every order the web took, and only those
    assert [key for key, n in copies.items() if n > 1] == []
    assert debezium.status(connect_worker.url)["tasks"] == ["RUNNING"]
    print(f"PostgreSQL restarted: {len(taken)} orders taken, {refused} refused meanwhile, lost 0, doubled 0")
