"""Dead letters: the policy that stops a consumer rather than dead-letter a whole topic, and
the writer that puts an event a group cannot process into `<topic>.dlq` with the reason.

An event re-driven to a group (deadletters.services.redrive) comes back through
`<group>.redrive` with `redrive.*` headers naming where it was first published; if it fails
again, it goes back to its source topic's DLQ with that origin and one more attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

from confluent_kafka import KafkaError, Message, Producer

from eventing import tracing
from eventing.headers import REDRIVE_PREFIX, Header, event_headers
from eventing.projection import TransientError
from eventing.topics import dead_letter_topic, logical_name, topic_name

log = logging.getLogger("foodsite.kafka.runner")

# The reason a dead letter carries (its dlq.error header), at most: an exception's message
# can quote anything (a value, a statement), and the letter must fit its topic
# (eventing.topics.DEAD_LETTER_MAX_BYTES).
MAX_REASON = 1000


class DeadLetterLimitExceeded(Exception):
    """Too large a share of a window's events failed: a broken deploy, not a bad event."""


@dataclass
class DeadLetterLimit:
    """Stop the consumer rather than dead-letter a whole topic (Sentry's arroyo has the same
    safeguard, DlqLimit). Counted over consecutive windows of at least `window` events the
    group processed (applied or failed; events of types it does not handle are not counted),
    across batches: a window with more than `max_share` of them failed stops the consumer
    before the batch that crossed the limit is committed or dead-lettered. A share of 1
    turns it off."""

    max_share: float
    window: int
    processed: int = 0
    failed: int = 0

    def check(self, processed: int, failed: int) -> None:
        """Raise if a batch would cross the limit; count nothing (the batch may be retried)."""
        total, bad = self.processed + processed, self.failed + failed
        if total >= self.window and bad > self.max_share * total:
            raise DeadLetterLimitExceeded(
                f"{bad} of the last {total} events failed, more than the limit of {self.max_share:.0%} "
                f"(DLQ_MAX_SHARE, over windows of {self.window} events: DLQ_WINDOW)"
            )

    def count(self, processed: int, failed: int) -> None:
        """Count a committed batch; a full window starts the next one."""
        self.processed += processed
        self.failed += failed
        if self.processed >= self.window:
            self.processed = self.failed = 0


class Origin(NamedTuple):
    """Where an event was first read, and how many times a group has tried it."""

    topic: str  # logical
    partition: int
    offset: int
    attempt: int


def origin_of(message: Message, *, redrive_topic: str | None, topics: tuple[str, ...]) -> Origin:
    """Where the event was first read: its own position, or, for an event re-driven to the
    group (read from its real `redrive_topic`), the position the re-drive wrote in its headers."""
    if message.topic() != redrive_topic:
        return Origin(logical_name(message.topic()), message.partition(), message.offset(), 1)
    headers = {key: value for key, value in message.headers() or () if key.startswith(REDRIVE_PREFIX)}
    try:
        origin = Origin(
            headers[Header.REDRIVE_TOPIC].decode(),
            int(headers[Header.REDRIVE_PARTITION]),
            int(headers[Header.REDRIVE_OFFSET]),
            int(headers[Header.REDRIVE_ATTEMPT]),
        )
        if origin.topic in topics:
            return origin
    except (KeyError, ValueError):
        pass
    # Not written by the re-drive service: its origin is where it is.
    return Origin(logical_name(message.topic()), message.partition(), message.offset(), 1)


class DeadLetterWriter:
    """Writes a group's dead letters and waits until Kafka has them all."""

    def __init__(self, producer: Producer, group: str, topics: tuple[str, ...], redrive_topic: str | None) -> None:
        self._producer = producer
        self._group = group  # real name
        self._topics = topics  # logical names of the group's source topics
        self._redrive_topic = redrive_topic  # real name, or None

    def write(self, dead: list[tuple[Message, str]]) -> None:
        """Dead-letter each message with its reason; raise TransientError unless all were
        acknowledged (the caller's offsets must not move past an event that is nowhere)."""
        undelivered: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                undelivered.append(error.str())

        for message, full_reason in dead:
            reason = _printable(full_reason)
            if len(reason) > MAX_REASON:
                reason = f"{reason[: MAX_REASON - 3]}..."
            origin = origin_of(message, redrive_topic=self._redrive_topic, topics=self._topics)
            # A re-driven event goes back to its source topic's DLQ (a message put in the
            # re-drive topic by hand, without its origin, to the group's first topic's).
            source = origin.topic if origin.topic in self._topics else self._topics[0]
            log.error(
                "%s: dead-lettering %s[%d]@%d (attempt %d): %s",
                self._group,
                origin.topic,
                origin.partition,
                origin.offset,
                origin.attempt,
                reason,
                extra={"trace_id": tracing.trace_id_of(tracing.header_of(message.headers()))},
            )
            self._producer.produce(
                topic_name(dead_letter_topic(source)),
                key=message.key(),
                value=message.value(),
                headers=[
                    # The original headers travel along, not those of an earlier dead letter or re-drive.
                    *event_headers(message.headers()),
                    (Header.DLQ_ERROR, reason.encode()),
                    (Header.DLQ_GROUP, self._group.encode()),
                    (Header.DLQ_TOPIC, message.topic().encode()),
                    (Header.DLQ_PARTITION, str(message.partition()).encode()),
                    (Header.DLQ_OFFSET, str(message.offset()).encode()),
                    (Header.DLQ_ORIGIN_TOPIC, topic_name(origin.topic).encode()),
                    (Header.DLQ_ORIGIN_PARTITION, str(origin.partition).encode()),
                    (Header.DLQ_ORIGIN_OFFSET, str(origin.offset).encode()),
                    (Header.DLQ_ATTEMPT, str(origin.attempt).encode()),
                ],
                on_delivery=delivered,
            )
        if self._producer.flush(30) > 0:
            raise TransientError("dead-letter topic did not acknowledge in time")
        if undelivered:  # e.g. a topic missing: retrying beats losing the event
            raise TransientError(f"dead letters refused: {undelivered[0]}")


def _printable(reason: str) -> str:
    """The reason as text any log and header takes: a lone surrogate in an exception's message
    (a string from JSON's "\\ud800") made reason.encode() raise UnicodeEncodeError out of the
    runner, a crash instead of a dead letter. Such a character is written as its escape."""
    return reason.encode("utf-8", "backslashreplace").decode()
