"""Transactional outbox: events are stored with the change they describe and sent after it
commits, so "order received" always means the event will reach Kafka.

    with transaction.atomic():
        order = Order.objects.create(...)
        outbox.enqueue(Event(OrderPlaced(...)))

After the commit the event goes straight to the process's producer; its delivery report
marks the row sent. Whatever is still unsent a few seconds later (Kafka down, the web
process killed) is sent by `relay_pending()`, run by `manage.py relay_outbox` or the Celery
task. A relay pass claims the rows it sends for a lease, so that passes running at once
(two workers, or two threads of one) never send the same event. An event can still be sent
twice (sent, then the process dies before marking it; or sent again after Kafka let a send
time out, which it may have written all the same): consumers de-duplicate by event id or are
idempotent, as docs/architecture.md describes.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta

from confluent_kafka import KafkaError, Message
from django.db import close_old_connections, connection, transaction
from django.db.models import Field, Min, Q
from django.utils import timezone

from contract.events import Event
from eventing import schema_registry, tracing
from eventing.conf import settings
from eventing.models import OutboxEvent
from eventing.producer import EventPublisher, get_publisher

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.outbox")

_delivered: list[str] = []  # event ids acknowledged by Kafka, not yet marked sent
_delivered_lock = threading.Lock()
# Events Kafka did not take, by reason, since the last warning: an outage fails every queued
# event, and one WARNING per event drowned the log (the relay sends them; nothing is lost).
_undelivered: Counter[str] = Counter()
_undelivered_warned_at = 0.0
UNDELIVERED_WARN_EVERY_S = 10.0
_marking = threading.Lock()


def enqueue(event: Event) -> None:
    """Store the event in the caller's transaction; send it once that transaction commits."""
    row = row_of(event)
    row.save(force_insert=True)
    stored(row)


def row_of(event: Event) -> OutboxEvent:
    """The event's outbox row, not saved yet."""
    # Encoded now, in this deployment's EVENT_FORMAT: the row keeps its content type, so a
    # relay running after a switch of format still sends it with the right header.
    value, content_type = schema_registry.encode_event(event, settings.EVENT_FORMAT)
    return OutboxEvent(
        id=event.id,
        topic=event.payload.TOPIC,
        key=event.key,
        event_type=event.type,
        value=value,
        content_type=content_type,
        traceparent=tracing.current_traceparent(),
        created_at=timezone.now(),
    )


# What a caller's own statement writes of a row (insert_sql): the columns a new row has.
INSERTED_FIELDS = ("id", "topic", "key", "event_type", "value", "content_type", "traceparent", "created_at")


def insert_sql(*, for_each_row_of: str) -> str:
    """SQL inserting an outbox row (its parameters: `insert_params(row)`), for a caller that
    writes it in a statement of its own with the change it describes (PostgreSQL: one of the
    statement's data-modifying WITH queries), once for each row of its query `for_each_row_of`
    (one: stored; none: not). Then, after that statement, `stored(row)`.

    One statement commits the change and its event together or not at all, in one round trip
    (orders.services.place_order)."""
    fields = _inserted_fields()
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    return (
        f"INSERT INTO {connection.ops.quote_name(OutboxEvent._meta.db_table)} ({columns}) "
        f"SELECT {', '.join(['%s'] * len(fields))} FROM {for_each_row_of}"
    )


def insert_params(row: OutboxEvent) -> list:
    """The parameters of insert_sql's statement for `row`."""
    return [field.get_db_prep_save(getattr(row, field.attname), connection) for field in _inserted_fields()]


@functools.cache
def _inserted_fields() -> list[Field]:
    return [OutboxEvent._meta.get_field(name) for name in INSERTED_FIELDS]


def stored(row: OutboxEvent) -> None:
    """The row is written in the caller's transaction (or its statement committed): send it
    once that commits."""
    log.info("stored %s for %s (event %s)", row.event_type, row.key, row.id)
    if settings.OUTBOX_RELAY == "debezium":
        return  # Kafka Connect reads the insert from the WAL (eventing.debezium)
    transaction.on_commit(lambda: send([row]))


def send(
    rows: Iterable[OutboxEvent], refused: list[str] | None = None, publisher: EventPublisher | None = None
) -> list[OutboxEvent]:
    """Hand the rows to the process's producer (or `publisher`); their delivery reports mark
    them sent. The ids of those Kafka gives up on are appended to `refused`. Returns the rows
    not handed over."""
    publisher = publisher or get_publisher()
    publisher.after_poll(mark_delivered)
    rows = list(rows)
    for handed, row in enumerate(rows):
        try:
            publisher.publish_encoded(
                row.topic,
                row.key,
                bytes(row.value),
                row.event_type,
                _on_delivery(str(row.id), refused),
                content_type=row.content_type,
                traceparent=row.traceparent,
            )
        except BufferError:
            # The producer's queue is full (a long outage): the row stays unsent for the
            # relay; the customer's request must not fail or wait for it.
            log.warning("producer queue full; %s left to the outbox relay", row.id)
            return rows[handed:]
    return []


def _on_delivery(event_id: str, refused: list[str] | None) -> Callable[[KafkaError | None, Message], None]:
    def report(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            log.debug("event %s not delivered yet (%s); the relay will send it again", event_id, error)
            with _delivered_lock:
                _undelivered[error.str()] += 1
                if refused is not None:
                    refused.append(event_id)
            return
        with _delivered_lock:
            _delivered.append(event_id)

    return report


def mark_delivered() -> int:
    """Mark the acknowledged events sent, in one UPDATE (called from the producer's poll thread,
    and by the relay after its flush)."""
    _warn_undelivered()
    # One marker at a time: the relay's call must wait for the poll thread's UPDATE under way,
    # or it would return before those rows are marked and a next pass would send them again.
    with _marking:
        with _delivered_lock:
            ids = _delivered[:]
            _delivered.clear()
        if not ids:
            return 0
        close_old_connections()
        try:
            return OutboxEvent.objects.filter(id__in=ids, sent_at__isnull=True).update(sent_at=timezone.now())
        except Exception:
            with _delivered_lock:  # try again after the next poll
                _delivered.extend(ids)
            raise


def _warn_undelivered() -> None:
    """At most one WARNING per reason every UNDELIVERED_WARN_EVERY_S, with the count."""
    global _undelivered_warned_at
    with _delivered_lock:
        if not _undelivered or time.monotonic() - _undelivered_warned_at < UNDELIVERED_WARN_EVERY_S:
            return
        counts = dict(_undelivered)
        _undelivered.clear()
        _undelivered_warned_at = time.monotonic()
    for reason, count in counts.items():
        log.warning("%d event(s) not delivered to Kafka yet (%s); the outbox relay will send them", count, reason)


def _trace_of(row: OutboxEvent) -> dict:
    return {"trace_id": tracing.trace_id_of(row.traceparent)}


def relay_pending(older_than: timedelta, limit: int = 5000, timeout: float | None = None) -> int:
    """Send the events still unsent after `older_than` (oldest first, so per key in order)
    and wait for Kafka's acknowledgements (`timeout`, by default as long as the relay's producer
    tries). Returns how many were sent.

    The pass claims its rows first (`claim_pending`), so a pass running beside it (another
    worker, another thread) sends other rows or none. Its producer tries each event for half
    the claim's lease, in one produce() (the idempotent producer's retries of one send are
    written once; each separate send that reaches a partition's log is a message of its own):
    a broker back within that time gets every event once from the relay. After the wait, the
    rows Kafka gave up on are released for the next pass at once; those still in flight keep
    their claim until its lease runs out, and so do the rows of a pass that died."""
    if connection.in_atomic_block:
        # The claim must be committed before Kafka is waited on: held open, its row locks
        # would block the poll thread's UPDATE (mark_delivered) while this pass waits for it.
        raise RuntimeError("relay_pending() runs outside a transaction: its claim must commit before it sends")
    claim = uuid.uuid4()
    rows = claim_pending(claim, older_than, limit)
    if not rows:
        return 0
    for row in rows:  # one line per event, with its order's trace id: `grep` follows it here too
        log.info("relaying %s for %s (event %s, pass %s)", row.event_type, row.key, row.id, claim, extra=_trace_of(row))
    publisher = relay_publisher()
    refused: list[str] = []
    kept = send(rows, refused, publisher)
    # A little past the producer's own timeout, for its reports of the events it gave up on.
    publisher.flush(settings.OUTBOX_RELAY_LEASE_S / 2 + 2 if timeout is None else timeout)
    mark_delivered()
    with _delivered_lock:
        released = {str(row.id) for row in kept} | set(refused)
    again = OutboxEvent.objects.filter(claimed_by=claim, id__in=released, sent_at__isnull=True).update(
        claimed_by=None, claimed_until=None
    )
    sent = OutboxEvent.objects.filter(claimed_by=claim, sent_at__isnull=False).count()
    log.info(
        "relay pass %s: %d of %d outbox event(s) sent, %d not taken by Kafka (left to the next pass), %d in flight",
        claim,
        sent,
        len(rows),
        again,
        len(rows) - sent - again,
    )
    return sent


def relay_publisher() -> EventPublisher:
    """The relay's own producer: it tries each event for half a claim's lease (the web's gives
    up after its delivery timeout, so that the relay can take over)."""
    return get_publisher("relay", **{"delivery.timeout.ms": int(settings.OUTBOX_RELAY_LEASE_S * 1000 / 2)})


def claim_pending(claim: uuid.UUID, older_than: timedelta, limit: int) -> list[OutboxEvent]:
    """Claim, for OUTBOX_RELAY_LEASE_S, the unsent rows past `older_than` that no live claim
    holds, oldest first, in one short transaction; returns them.

    Two passes claiming at once take different rows: on PostgreSQL `FOR UPDATE SKIP LOCKED`
    passes over the rows another claim is taking; on SQLite the transaction is IMMEDIATE and
    writers take turns (foodsite.sqlite). A row is left out while an older unsent event of its
    key is not in the claim (another pass is sending it, or its row was locked): the other
    pass's producer could deliver it after this one's, and each key stays in order."""
    now = timezone.now()
    lease = timedelta(seconds=settings.OUTBOX_RELAY_LEASE_S)
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(sent_at__isnull=True, created_at__lte=now - older_than)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .order_by("created_at")[:limit]
        )
        if not rows:
            return []
        ids = [row.id for row in rows]
        older_elsewhere = dict(
            OutboxEvent.objects.filter(key__in={row.key for row in rows}, sent_at__isnull=True)
            .exclude(id__in=ids)
            .values("key")
            .annotate(oldest=Min("created_at"))
            .values_list("key", "oldest")
        )
        rows = [row for row in rows if row.key not in older_elsewhere or row.created_at < older_elsewhere[row.key]]
        OutboxEvent.objects.filter(id__in=[row.id for row in rows]).update(claimed_by=claim, claimed_until=now + lease)
    for row in rows:
        row.claimed_by, row.claimed_until = claim, now + lease
    return rows
