"""The Debezium outbox relay (OUTBOX_RELAY=debezium): Kafka Connect reads the outbox table's
inserts from PostgreSQL's write-ahead log and writes each row to its topic.

The web writes the outbox row and nothing else (eventing.outbox.stored). Debezium's
PostgreSQL connector, on a Kafka Connect worker (devstack.kafka_connect), streams the
publication `PUBLICATION` (the outbox table, inserts only: migration 0006)
through a replication slot of its own, with the `pgoutput` decoder PostgreSQL ships; its
outbox EventRouter routes each row to the topic its `topic` column names, keyed by its
`key`, the value its encoded bytes as the web wrote them, with the event id (`id`), the event
type, content type and traceparent as headers: what the web's own producer writes.
`exactly.once.support=required`: the worker writes the records and the slot's position in
one Kafka transaction, so a worker killed mid-stream neither loses nor repeats an event.

The connector is registered through Connect's REST API (`manage.py register_outbox_connector`,
which the launcher runs): a PUT of its whole config, so a second registration is a no-op.
Rows are never marked sent: the relay reads inserts, not the table, and rows are deleted on a
schedule (`purge_relayed`), which the publication does not publish.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from eventing.conf import settings
from eventing.headers import Header
from eventing.models import OutboxEvent

PUBLICATION = "foodsite_outbox"
CONNECTOR = "foodsite-outbox"
# The heartbeat's rows (outbox rows of their own) go to this topic, which no consumer reads.
HEARTBEAT_TOPIC = "outbox-heartbeat"
HEARTBEAT_TYPE = "outbox.heartbeat"
# Debezium's own topic naming (`<topic.prefix>.<schema>.<table>`): only seen inside the
# connector, where its SMTs match on it; the EventRouter routes every outbox row elsewhere.
SOURCE_PREFIX = "foodsite-outbox"


class ConnectError(RuntimeError):
    """Kafka Connect refused or did not answer: the message says what it said."""


def slot_name(database: str | None = None) -> str:
    """The connector's replication slot: one per database (slots are the server's, and two
    databases of one server, e.g. two test runs, must not share one)."""
    database = database or connection.settings_dict["NAME"]
    return "foodsite_outbox_" + re.sub(r"[^a-z0-9_]", "_", database.lower())[:40]


def connector_name(database: str | None = None) -> str:
    database = database or connection.settings_dict["NAME"]
    return f"{CONNECTOR}-{re.sub(r'[^a-z0-9_-]', '-', database.lower())}"


def connector_config(*, heartbeat_ms: int | None = None) -> dict[str, str]:
    """The Debezium connector's configuration for this deployment's database and topics."""
    db = connection.settings_dict
    outbox = OutboxEvent._meta.db_table
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": db["HOST"] or "127.0.0.1",
        "database.port": str(db["PORT"] or 5432),
        "database.user": db["USER"],
        "database.password": db["PASSWORD"],
        "database.dbname": db["NAME"],
        "topic.prefix": SOURCE_PREFIX,
        "slot.name": slot_name(db["NAME"]),
        "publication.name": PUBLICATION,
        # The migration made the publication (the outbox table, inserts only): Debezium must
        # not widen it.
        "publication.autocreate.mode": "disabled",
        "table.include.list": f"public.{outbox}",
        # Rows present before the switch were the Celery relay's to send (docs/architecture.md).
        "snapshot.mode": "no_data",
        "binary.handling.mode": "bytes",
        "tombstones.on.delete": "false",
        # Without it each record carries four __debezium.context.* headers no reader uses.
        "extended.headers.enabled": "false",
        "exactly.once.support": "required",
        # How long the task sleeps when the WAL stream has nothing new, and again when its queue
        # is empty: the default 500 ms twice put 0.4-1.3 s between an order's commit and its
        # event on the topic (bench/live_latency.py --profile cluster). Idle, 50 ms costs a
        # few wake-ups a second.
        "poll.interval.ms": "50",
        # While no order comes in, nothing moves the slot on and PostgreSQL keeps every segment
        # of WAL other tables (and other databases of the server) write. Debezium's heartbeat
        # records alone did not move it (they were dropped before Kafka, and their position was
        # never confirmed to PostgreSQL): the heartbeat writes an outbox row, which the slot
        # reads, the EventRouter sends to HEARTBEAT_TOPIC, and its commit confirms the position.
        "heartbeat.interval.ms": str(heartbeat_ms or settings.OUTBOX_HEARTBEAT_MS),
        "heartbeat.action.query": (
            f"INSERT INTO {outbox} (id, topic, key, event_type, value, content_type, traceparent, created_at) "
            f"VALUES (gen_random_uuid(), '{HEARTBEAT_TOPIC}', 'heartbeat', '{HEARTBEAT_TYPE}', ''::bytea, "
            "'application/octet-stream', '', now())"
        ),
        "topic.heartbeat.prefix": f"{settings.KAFKA_TOPIC_PREFIX}__debezium-heartbeat",
        # Debezium's own heartbeat records (a Struct the byte-array converter cannot write) are
        # dropped; the outbox's rows go through the EventRouter.
        "transforms": "dropHeartbeats,outbox",
        "transforms.dropHeartbeats.type": "org.apache.kafka.connect.transforms.Filter",
        "transforms.dropHeartbeats.predicate": "isOutbox",
        "transforms.dropHeartbeats.negate": "true",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.predicate": "isOutbox",
        "predicates": "isOutbox",
        "predicates.isOutbox.type": "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
        "predicates.isOutbox.pattern": rf"{re.escape(SOURCE_PREFIX)}\.public\.{outbox}",
        "transforms.outbox.table.field.event.id": "id",
        "transforms.outbox.table.field.event.key": "key",
        "transforms.outbox.table.field.event.payload": "value",
        "transforms.outbox.route.by.field": "topic",
        "transforms.outbox.route.topic.replacement": f"{settings.KAFKA_TOPIC_PREFIX}${{routedByValue}}",
        "transforms.outbox.table.fields.additional.placement": (
            f"event_type:header:{Header.EVENT_TYPE},"
            f"content_type:header:{Header.CONTENT_TYPE},"
            f"traceparent:header:{Header.TRACEPARENT}"
        ),
        "transforms.outbox.table.expand.json.payload": "false",
        # Only the heartbeat's topic is not made by ensure_topics: Connect makes it, small.
        "topic.creation.default.replication.factor": str(settings.KAFKA_REPLICATION_FACTOR),
        "topic.creation.default.partitions": "1",
        "topic.creation.default.retention.ms": str(3600 * 1000),
    }


def _request(connect_url: str, method: str, path: str, body: dict | None = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{connect_url.rstrip('/')}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        reason = exc.read().decode(errors="replace")[:1000]
        raise ConnectError(
            f"Kafka Connect at {connect_url} answered {method} {path} with {exc.code}: {reason}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectError(f"Kafka Connect at {connect_url} does not answer ({exc})") from exc


def register(connect_url: str, *, name: str | None = None, config: dict[str, str] | None = None) -> str:
    """Create or update the connector (a PUT of its whole config: the same twice is a no-op)."""
    name = name or connector_name()
    _request(connect_url, "PUT", f"/connectors/{name}/config", config or connector_config())
    return name


def status(connect_url: str, name: str | None = None, timeout: float = 10) -> dict[str, Any]:
    """`{"connector": "RUNNING", "tasks": ["RUNNING"], "trace": ...}` as Connect reports them;
    "UNASSIGNED" while a rebalance is under way, "MISSING" when no such connector."""
    name = name or connector_name()
    try:
        answer = _request(connect_url, "GET", f"/connectors/{name}/status", timeout=timeout)
    except ConnectError as exc:
        if " 404:" in str(exc):
            return {"connector": "MISSING", "tasks": [], "trace": ""}
        raise
    tasks = answer.get("tasks", [])
    trace = next((task.get("trace", "") for task in tasks if task.get("state") == "FAILED"), "")
    return {
        "connector": answer["connector"]["state"],
        "tasks": [task["state"] for task in sorted(tasks, key=lambda task: task["id"])],
        "trace": trace,
    }


def wait_running(connect_url: str, name: str | None = None, timeout: float = 60) -> dict[str, Any]:
    """Until the connector and its task run; a FAILED task raises with its trace's first lines."""
    deadline = time.monotonic() + timeout
    while True:
        state = status(connect_url, name)
        if state["connector"] == "RUNNING" and state["tasks"] and all(t == "RUNNING" for t in state["tasks"]):
            return state
        if "FAILED" in [state["connector"], *state["tasks"]]:
            raise ConnectError(f"the outbox connector failed: {state['trace'][:2000]}")
        if time.monotonic() > deadline:
            raise ConnectError(f"the outbox connector is not running after {timeout:.0f} s: {state}")
        time.sleep(0.5)


@dataclass(frozen=True)
class RelayState:
    """What the staff page and /metrics say of the relay: Connect's states of the connector and
    its tasks (RUNNING, FAILED, PAUSED, UNASSIGNED; MISSING: not registered; UNREACHABLE: Connect
    did not answer) and how much WAL its slot holds back."""

    connector: str
    tasks: tuple[str, ...] = ()
    slot_lag_bytes: int | None = None
    error: str = ""  # Connect's answer when unreachable, or the failed task's first trace line

    @property
    def running(self) -> bool:
        return self.connector == "RUNNING" and bool(self.tasks) and all(t == "RUNNING" for t in self.tasks)


def relay_state(connect_url: str | None = None, timeout: float = 2) -> RelayState:
    """The relay now, within `timeout` for Connect (the staff page's budget)."""
    lag = slot_lag_bytes()
    connect_url = connect_url or settings.CONNECT_URL
    if not connect_url:
        return RelayState("UNREACHABLE", slot_lag_bytes=lag, error="CONNECT_URL is not set")
    try:
        state = status(connect_url, timeout=timeout)
    except ConnectError as exc:
        return RelayState("UNREACHABLE", slot_lag_bytes=lag, error=str(exc))
    first_line = state["trace"].strip().split("\n", 1)[0] if state["trace"] else ""
    return RelayState(state["connector"], tuple(state["tasks"]), lag, first_line)


def slot_lag_bytes(database: str | None = None) -> int | None:
    """How much write-ahead log the connector's slot holds back (None: no slot yet): what an
    alert on a stopped relay is written on, since PostgreSQL keeps it until the slot moves."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            [slot_name(database)],
        )
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def drop_slot(database: str | None = None) -> bool:
    """Drop the connector's slot (the connector deleted first): PostgreSQL would keep the WAL
    for it for ever. Returns whether there was one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            [slot_name(database)],
        )
        return cursor.fetchone() is not None


def purge_relayed(older_than: timedelta | None = None) -> int:
    """Delete the outbox rows (events and heartbeats) older than OUTBOX_KEEP_S: the relay read
    them from the WAL when they were inserted, and deletes are not published. Returns how many."""
    before = timezone.now() - (older_than if older_than is not None else timedelta(seconds=settings.OUTBOX_KEEP_S))
    deleted, _ = OutboxEvent.objects.filter(created_at__lt=before).delete()
    return deleted
