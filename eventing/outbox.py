"""Transactional outbox: events are stored with the change they describe and sent after it
commits, so "order received" always means the event will reach Kafka.

    with transaction.atomic():
        order = Order.objects.create(...)
        outbox.enqueue(Event(OrderPlaced(...)))

After the commit the event goes straight to the process's producer; its delivery report
marks the row sent. Whatever is still unsent a few seconds later (Kafka down, the web
process killed) is sent by `relay_pending()`, run by `manage.py relay_outbox`. An event can
be sent twice (sent, then the process dies before marking it): consumers de-duplicate by
event id or are idempotent, as docs/architecture.md describes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta

from confluent_kafka import KafkaError, Message
from django.db import close_old_connections, transaction
from django.utils import timezone

from contract.events import Event, encode
from eventing import tracing
from eventing.conf import settings
from eventing.models import OutboxEvent
from eventing.producer import get_publisher

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
    # Encoded now, in this deployment's EVENT_FORMAT: the row keeps its content type, so a
    # relay running after a switch of format still sends it with the right header.
    value, content_type = encode(event, settings.EVENT_FORMAT)
    row = OutboxEvent.objects.create(
        id=event.id,
        topic=event.payload.TOPIC,
        key=event.key,
        event_type=event.type,
        value=value,
        content_type=content_type,
        traceparent=tracing.current_traceparent(),
    )
    log.info("stored %s for %s (event %s)", event.type, event.key, event.id)
    transaction.on_commit(lambda: send([row]))


def send(rows: Iterable[OutboxEvent]) -> None:
    publisher = get_publisher()
    publisher.after_poll(mark_delivered)
    for row in rows:
        try:
            publisher.publish_encoded(
                row.topic,
                row.key,
                bytes(row.value),
                row.event_type,
                _on_delivery(str(row.id)),
                content_type=row.content_type,
                traceparent=row.traceparent,
            )
        except BufferError:
            # The producer's queue is full (a long outage): the row stays unsent for the
            # relay; the customer's request must not fail or wait for it.
            log.warning("producer queue full; %s left to the outbox relay", row.id)
            return


def _on_delivery(event_id: str) -> Callable[[KafkaError | None, Message], None]:
    def report(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            log.debug("event %s not delivered yet (%s); the relay will send it again", event_id, error)
            with _delivered_lock:
                _undelivered[error.str()] += 1
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


def relay_pending(older_than: timedelta, limit: int = 5000, timeout: float = 30) -> int:
    """Send the events still unsent after `older_than` (oldest first, so per key in order)
    and wait for Kafka's acknowledgements. Returns how many were sent."""
    rows = list(
        OutboxEvent.objects.filter(sent_at__isnull=True, created_at__lte=timezone.now() - older_than).order_by(
            "created_at"
        )[:limit]
    )
    if not rows:
        return 0
    for row in rows:  # one line per event, with its order's trace id: `grep` follows it here too
        log.info("relaying %s for %s (event %s)", row.event_type, row.key, row.id, extra=_trace_of(row))
    send(rows)
    undelivered = get_publisher().flush(timeout)
    mark_delivered()
    log.info("relayed %d outbox event(s), %d still undelivered", len(rows) - undelivered, undelivered)
    return len(rows) - undelivered
