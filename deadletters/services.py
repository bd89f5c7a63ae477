"""Re-drive: send dead letters back to the one group that failed on them.

A dead letter of group G goes to `<G>.redrive` (a topic only G's runner reads), at the
partition number it was first published on, with its original key, value and headers plus
`redrive.topic`, `redrive.partition`, `redrive.offset` (where it was first published) and
`redrive.attempt`. G's runner applies it with the same projection code, in the same
transaction as its offsets; if it fails again it is a new dead letter with that attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from deadletters.models import DeadLetter
from eventing.bulk import update_many
from eventing.clients import producer_config
from eventing.headers import Header
from eventing.registry import redrivable_groups
from eventing.topics import DEAD_LETTER_MAX_BYTES, redrive_topic, topic_name

CHUNK = 1000  # letters per flush and per UPDATE: "all of a group's" can be 100,000
FLUSH_TIMEOUT_S = 15


@dataclass
class RedriveOutcome:
    sent: int = 0
    not_sent: int = 0
    errors: list[str] = field(default_factory=list)  # distinct reasons, for the page

    def __str__(self) -> str:
        text = f"{self.sent} dead letter{'s' if self.sent != 1 else ''} re-driven"
        if self.not_sent:
            text += f", {self.not_sent} not sent: {'; '.join(self.errors)}"
        return text


def open_letters(group: str) -> QuerySet[DeadLetter]:
    """A group's dead letters not re-driven yet (a failed re-drive is a new, open letter)."""
    return DeadLetter.objects.filter(group=group, redriven_at__isnull=True)


def redrive(letters: QuerySet[DeadLetter]) -> RedriveOutcome:
    """Send each letter to its group's re-drive topic, in the queryset's order, and record
    where it went. Letters already re-driven are sent again if asked: the projections are
    idempotent."""
    outcome = RedriveOutcome()
    producer = Producer(producer_config("redrive", **{"message.max.bytes": DEAD_LETTER_MAX_BYTES}))
    partitions: dict[str, int] = {}  # re-drive topic -> partition count
    groups = set(redrivable_groups())
    # The ids first: the rows are updated as they go, and SQLite does not isolate a cursor
    # still open on a table from writes to it on the same connection.
    ids = list(letters.values_list("pk", flat=True))
    for start in range(0, len(ids), CHUNK):
        chunk_ids = ids[start : start + CHUNK]
        rows = DeadLetter.objects.in_bulk(chunk_ids)
        _send(producer, [rows[pk] for pk in chunk_ids if pk in rows], groups, partitions, outcome)
    return outcome


def _send(
    producer: Producer,
    letters: list[DeadLetter],
    groups: set[str],
    partitions: dict[str, int],
    outcome: RedriveOutcome,
) -> None:
    delivered: dict[int, Message] = {}
    failed: dict[int, str] = {}

    def report(letter_id: int):
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                delivered[letter_id] = message
            else:
                failed[letter_id] = error.str()

        return on_delivery

    for letter in letters:
        if letter.group not in groups:
            failed[letter.pk] = f"group {letter.group!r} has no re-drive topic"
            continue
        topic = topic_name(redrive_topic(letter.group))
        try:
            if topic not in partitions:
                metadata = producer.list_topics(topic, timeout=5).topics[topic]
                if metadata.error is not None:
                    raise KafkaException(metadata.error)
                partitions[topic] = len(metadata.partitions)
            # The partition number it was first published on, so the member owning that
            # partition of the source topics gets it; keyed like any event otherwise.
            where = {"partition": letter.origin_partition} if letter.origin_partition < partitions[topic] else {}
            producer.produce(
                topic,
                key=_bytes(letter.key),
                value=_bytes(letter.value),
                headers=[
                    *letter.event_headers,
                    (Header.REDRIVE_TOPIC, letter.origin_topic.encode()),
                    (Header.REDRIVE_PARTITION, str(letter.origin_partition).encode()),
                    (Header.REDRIVE_OFFSET, str(letter.origin_offset).encode()),
                    (Header.REDRIVE_ATTEMPT, str(letter.attempt + 1).encode()),
                    (Header.REDRIVE_DEAD_LETTER, str(letter.pk).encode()),
                ],
                on_delivery=report(letter.pk),
                **where,
            )
        except (KafkaException, BufferError) as exc:
            failed[letter.pk] = _reason(exc)
        producer.poll(0)
    producer.flush(FLUSH_TIMEOUT_S)  # what is still queued after this counts as not sent

    now = timezone.now()
    sent = []
    for letter in letters:
        message = delivered.get(letter.pk)
        if message is not None:
            letter.redriven_at = now
            letter.redrive_partition, letter.redrive_offset = message.partition(), message.offset()
            sent.append(letter)
    with transaction.atomic():
        update_many(sent, ["redriven_at", "redrive_partition", "redrive_offset"])
    outcome.sent += len(sent)
    outcome.not_sent += len(letters) - len(sent)
    for reason in [*failed.values(), *(["not acknowledged in time"] if len(sent) + len(failed) < len(letters) else [])]:
        if reason not in outcome.errors:
            outcome.errors.append(reason)


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)  # PostgreSQL's BinaryField gives memoryview


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].str()
    return str(exc) or type(exc).__name__
