"""One order's trace on the real broker: from the request's traceparent to the outbox row,
the relay, the Kafka header and the consumer's log line; and the JSON log format."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from contract.events import Event, OrderPlaced
from devstack.kafka_node import free_port
from eventing import tracing
from eventing.models import OutboxEvent
from eventing.outbox import relay_pending
from eventing.producer import get_publisher, reset_publisher
from harness.factories import DishFactory
from stats.projection import SalesProjection

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def place(client, dish, **headers) -> tuple[str, str]:
    response = client.post("/", {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish.pk}": "1"}, **headers)
    assert response.status_code == 302, response.content.decode()[:500]
    return re.fullmatch(r"/orders/([0-9a-f-]+)/", response["Location"]).group(1), response["traceparent"]


def test_an_order_relayed_after_an_outage_keeps_its_requests_trace_to_the_consumer(client, kafka, settings, caplog):
    caplog.set_level(logging.INFO)
    dish = DishFactory()
    trace_id = secrets.token_hex(16)
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # Kafka down: the relay will send it
    reset_publisher()

    order_id, answered = place(client, dish, HTTP_TRACEPARENT=traceparent(trace_id))

    assert tracing.trace_id_of(answered) == trace_id  # the response says which trace
    row = OutboxEvent.objects.get(key=order_id)
    assert tracing.trace_id_of(row.traceparent) == trace_id
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka.bootstrap_servers
    reset_publisher(flush_timeout=0)

    caplog.clear()
    assert relay_pending(older_than=timedelta(0)) == 1
    relayed = [r for r in caplog.records if r.getMessage().startswith("relaying order.placed")]
    assert [r.trace_id for r in relayed] == [trace_id]

    [message] = kafka.read_topic("orders")
    assert tracing.trace_id_of(tracing.header_of(message.headers())) == trace_id

    caplog.clear()
    kafka.drain(SalesProjection())
    applied = [r for r in caplog.records if f"stats applied 1 event of orders[{message.partition()}]" in r.getMessage()]
    assert [r.getMessage().rsplit(": ", 1)[1] for r in applied] == [f"order.placed {order_id}@{message.offset()}"]
    assert [r.trace_id for r in applied] == [trace_id]  # the line's only trace: the record's own


def test_a_consumer_logs_its_batch_a_line_per_32_events_of_a_partition_each_with_its_order_and_trace(kafka, caplog):
    caplog.set_level(logging.INFO)
    traces = {}
    for _ in range(100):
        trace = tracing.new_trace()
        order_id = str(uuid.uuid4())
        with tracing.use(trace):
            get_publisher().publish(Event(OrderPlaced(order_id, "Ada", "Via Roma 1", [], Decimal("0"))))
        traces[order_id] = trace.trace_id
    caplog.clear()

    kafka.drain(SalesProjection())

    lines = [r for r in caplog.records if r.name == "foodsite.kafka.events"]
    named = []  # (order, trace): a line's events each name their trace, or the line has one for all
    for line in lines:
        header, items = line.getMessage().split(": ", 1)
        events = [
            re.fullmatch(r"order\.placed (\S+)@\d+(?: trace=([0-9a-f]{32}))?", item) for item in items.split(", ")
        ]
        assert all(events), items
        assert len(events) <= 32
        assert re.fullmatch(rf"\S*stats applied {len(events)} events? of \S+\[\d\]", header)
        named += [(event.group(1), event.group(2) or line.trace_id) for event in events]
        assert line.trace_ids == sorted({trace for _, trace in named[-len(events) :]})
        as_json = json.loads(tracing.JsonLogFormatter().format(line))
        assert as_json["trace_id"] == (line.trace_id or None)
        assert as_json.get("trace_ids", line.trace_ids) == line.trace_ids  # several traces: all of them
    assert sorted(named) == sorted(traces.items())
    assert len(lines) < 100 / 8  # a line per event before: 3 partitions of ~33 events, 6 lines or so


def test_a_request_without_a_valid_traceparent_starts_a_trace_of_its_own(client, kafka):
    dish = DishFactory()
    first_order, first = place(client, dish)
    second_order, second = place(client, dish, HTTP_TRACEPARENT="00-not-a-trace-01")
    first_id, second_id = tracing.trace_id_of(first), tracing.trace_id_of(second)
    assert first_id
    assert second_id
    assert first_id != second_id
    stored = dict(OutboxEvent.objects.values_list("key", "traceparent"))
    assert tracing.trace_id_of(stored[first_order]) == first_id
    assert tracing.trace_id_of(stored[second_order]) == second_id


def test_the_json_log_format_writes_one_object_per_line_with_the_trace_id(tmp_path):
    trace_id = secrets.token_hex(16)
    code = (
        "import logging\nfrom eventing import tracing\n"
        f"with tracing.use('{traceparent(trace_id)}'):\n    logging.getLogger('foodsite.demo').warning('order %s', 7)\n"
        "logging.getLogger('foodsite.demo').warning('no trace')\n"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "FOODSITE_HOME": str(tmp_path), "FOODSITE_PROCESS": "stats"}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if "foodsite.demo" in line]
    assert [(e["message"], e["trace_id"], e["process"], e["level"]) for e in lines] == [
        ("order 7", trace_id, "stats", "WARNING"),
        ("no trace", None, "stats", "WARNING"),
    ]
    assert {"time", "logger", "pid"} <= lines[0].keys()


def test_the_plain_format_ends_a_line_about_a_trace_with_its_id(tmp_path):
    trace_id = secrets.token_hex(16)
    code = (
        "import logging\nfrom eventing import tracing\n"
        f"with tracing.use('{traceparent(trace_id)}'):\n    logging.getLogger('foodsite.demo').warning('order 7')\n"
    )
    env = {**os.environ, "FOODSITE_HOME": str(tmp_path)}
    env.pop("LOG_FORMAT", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rf"WARNING foodsite\.demo: order 7 trace={trace_id}$", result.stderr, re.MULTILINE), result.stderr
