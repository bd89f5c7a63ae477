"""Kafka down while customers order: every request still succeeds; the web process is then
killed with kill -9 (its producer's queue lost); once the broker is back the outbox relay
gets every event onto its topic exactly once, and the courier and staff pages show every
order. Real processes: daphne, the consumers, the Celery worker with beat running the relay."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import requests

from devstack.kafka_node import LocalKafka
from devstack.launcher import wait_http
from eventing.producer import reset_publisher
from eventing.projection import decode_message
from eventing.topics import admin_client, declared_topics, ensure_topics
from harness.http_client import logged_in, order_and_pay
from harness.kafka_support import KafkaTestBed
from harness.processes import Services

pytestmark = pytest.mark.system
ORDERS = 200


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(1)


def test_orders_placed_while_kafka_is_down_all_arrive_exactly_once(tmp_path, settings, process_database_url):
    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    broker.wait_ready()
    settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
    settings.KAFKA_TOPIC_PREFIX = settings.KAFKA_GROUP_PREFIX = f"outage-{uuid.uuid4().hex[:8]}-"
    ensure_topics(admin_client(), declared_topics())
    services = Services(tmp_path / "home", broker.bootstrap_servers, process_database_url)
    try:
        services.manage("seed_demo")
        web, url = services.spawn_web()
        for command in ("consume_deliveries", "consume_stats"):
            services.start(command)
        services.env["OUTBOX_RELAY_EVERY_S"] = "1"
        services.spawn(
            "worker",
            [
                services.python,
                "-m",
                "celery",
                "-A",
                "foodsite",
                "worker",
                "--beat",
                "--concurrency",
                "1",
                "--schedule",
                str(tmp_path / "home" / "celerybeat"),
            ],
        )
        wait_http(f"{url}/healthz", timeout=60)

        broker.stop()
        customer = requests.Session()
        started = time.monotonic()
        for _ in range(ORDERS):
            order_and_pay(customer, url)  # every one answered "received", Kafka or not
        print(f"{ORDERS} orders placed and paid with Kafka down in {time.monotonic() - started:.1f} s")
        web.kill()  # kill -9: whatever its producer still held dies with it; the outbox has it all
        web.wait()
        broker.start()
        broker.wait_ready()
        back = time.monotonic()
        services.spawn_web(port=int(url.rsplit(":", 1)[1]))  # where the customers' pages are

        bed = KafkaTestBed(broker.bootstrap_servers)
        wait_for(lambda: len(bed.read_topic("payments")) >= ORDERS, 60, "events never reached Kafka")
        print(f"every event on Kafka {time.monotonic() - back:.1f} s after the broker came back")
        for topic in ("orders", "payments"):
            ids = Counter(decode_message(m).id for m in bed.read_topic(topic))
            assert len(ids) == ORDERS, topic
            assert set(ids.values()) == {1}, f"{topic}: an event was sent twice"

        wait_http(f"{url}/healthz", timeout=60)  # the restarted web process
        courier, staff = logged_in(url, "courier"), logged_in(url, "staff")
        wait_for(
            # The page lists the oldest 20 open deliveries and counts them all.
            lambda: f"{ORDERS} open deliveries" in courier.get(f"{url}/courier/").text,
            60,
            "courier page never showed every order",
        )
        wait_for(
            lambda: f'id="stat-orders">{ORDERS}<' in staff.get(f"{url}/stats/").text,
            60,
            "stats page never counted every order",
        )
        print(f"courier and stats pages complete {time.monotonic() - back:.1f} s after the broker came back")
    finally:
        services.close()
        broker.stop()
        reset_publisher(flush_timeout=0)
