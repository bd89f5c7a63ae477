"""The dead-letter recorder: group `dead-letters` reads every `<topic>.dlq` and keeps each
dead letter as a DeadLetter row, so the staff page lists, filters and pages through them
from the database instead of reading Kafka at each request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from django.conf import settings
from django.utils import timezone

from contract.events import Event
from deadletters.models import DeadLetter
from eventing.headers import DLQ_PREFIX, Header, event_headers
from eventing.projection import ConsumedEvent, Projection
from eventing.registry import register
from eventing.topics import SOURCE_TOPICS, dead_letter_topic, logical_name


@dataclass(frozen=True)
class DeadLetterMessage:
    """A message of a dead-letter topic, whatever its value holds (often not a valid event)."""

    dlq_topic: str  # logical
    headers: dict[str, bytes]  # the dlq.* headers
    event_headers: list[tuple[str, bytes]]
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None

    # What the runner's per-event log line names (an Event's type and key).
    TYPE: ClassVar[str] = "dead-letter"

    @property
    def order_id(self) -> str:
        return self.key.decode(errors="replace") if self.key else "-"


@register
class DeadLetterRecorder(Projection):
    group = "dead-letters"
    topics = tuple(dead_letter_topic(topic) for topic in SOURCE_TOPICS)
    handles = (DeadLetterMessage,)
    redrive = False  # it writes any bytes it is given: nothing to re-drive

    def decode(self, message: Message) -> Event:
        # Never InvalidEvent: the bytes are kept as they are, and shown escaped by the page.
        headers = message.headers() or []
        kind, timestamp = message.timestamp()
        payload = DeadLetterMessage(
            dlq_topic=logical_name(message.topic()),
            headers={k: v for k, v in headers if k.startswith(DLQ_PREFIX)},
            event_headers=event_headers(headers),
            key=message.key(),
            value=message.value(),
            timestamp_ms=None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
        )
        return Event(payload=payload, id="")

    def apply(self, events: list[ConsumedEvent]) -> None:
        # ignore_conflicts: a copy of a dead letter already recorded (the DLQ can hold one
        # twice, see docs/architecture.md) is dropped by the unique (group, topic, partition, offset).
        DeadLetter.objects.bulk_create([_letter(e) for e in events], ignore_conflicts=True)

    def reset(self) -> None:
        # Letters staff re-drove keep that record, which the log cannot rebuild; a replay
        # finds them by their identity and leaves them. The others come back from the log.
        DeadLetter.objects.filter(redriven_at__isnull=True).delete()


def _letter(consumed: ConsumedEvent) -> DeadLetter:
    message: DeadLetterMessage = consumed.payload
    dlq = message.headers

    def text(name: str, default: str) -> str:
        # PostgreSQL's text refuses NUL characters: shown escaped instead.
        return dlq[name].decode(errors="replace").replace("\x00", "\\x00") if name in dlq else default

    def number(name: str, default: int) -> int:
        try:
            return int(dlq[name])
        except (KeyError, ValueError):
            return default

    # A message put in a DLQ by hand, without our headers, is recorded where it sits.
    source = message.dlq_topic.removesuffix(".dlq")
    topic = logical_name(text(Header.DLQ_TOPIC, source))
    partition = number(Header.DLQ_PARTITION, consumed.partition)
    offset = number(Header.DLQ_OFFSET, consumed.offset)
    return DeadLetter(
        group=text(Header.DLQ_GROUP, "").removeprefix(settings.KAFKA_GROUP_PREFIX),
        topic=topic,
        partition=partition,
        offset=offset,
        origin_topic=logical_name(text(Header.DLQ_ORIGIN_TOPIC, topic)),
        origin_partition=number(Header.DLQ_ORIGIN_PARTITION, partition),
        origin_offset=number(Header.DLQ_ORIGIN_OFFSET, offset),
        attempt=number(Header.DLQ_ATTEMPT, 1),
        error=text(Header.DLQ_ERROR, "(no dlq.error header)"),
        failed_at=(
            datetime.fromtimestamp(message.timestamp_ms / 1000, UTC) if message.timestamp_ms else timezone.now()
        ),
        key=message.key,
        value=message.value,
        headers=[[name, value.hex()] for name, value in message.event_headers if value is not None],
    )
