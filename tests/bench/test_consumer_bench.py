"""The consumer bench's check of the Quix peer: its output topic, read committed, added up as the
stats tables are, on the real broker. A repeated order or an aborted transaction's record must
show (no figure is timed here)."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BASE_DIR = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("consumer_bench", BASE_DIR / "bench" / "consumer_bench.py")
consumer_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(consumer_bench)


def paid(order_id: str, total: str, lines: list[list[int]]) -> bytes:
    return json.dumps({"order_id": order_id, "total": total, "food_cost": "1.20", "lines": lines}).encode()


def test_the_peers_output_is_added_up_read_committed_and_a_repeated_order_shows(kafka_bootstrap):
    topic = f"paid-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: a collected client drops its futures
    [created] = admin.create_topics([NewTopic(topic, 2, 1)]).values()
    created.result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"peer-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"a", value=paid("a", "10.50", [[1, 2]]))
    producer.produce(topic, key=b"b", value=paid("b", "7.00", [[1, 1], [3, 1]]))
    producer.commit_transaction(30)
    producer.begin_transaction()  # a checkpoint that failed: its records never count
    producer.produce(topic, key=b"c", value=paid("c", "99.00", [[9, 9]]))
    producer.abort_transaction(30)
    producer.begin_transaction()  # a second copy of an order counted already
    producer.produce(topic, key=b"a", value=paid("a", "10.50", [[1, 2]]))
    producer.commit_transaction(30)

    result = consumer_bench.paid_orders_on(kafka_bootstrap, topic)

    assert result == {
        "orders": 2,
        "revenue": "28.00",
        "food_cost": "3.60",
        "dishes": {"1": 5, "3": 1},
        "repeated_records": 1,
    }
