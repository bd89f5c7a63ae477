"""The consume loop every projection shares: poll, decode, apply, store offsets, dead letters.

Exactly-once into the database: the projection's writes and the group's next offsets are
saved in ONE transaction (table ConsumerOffset), and on assignment the consumer seeks to
the offsets stored there. A crash at any instant either keeps both or neither. Kafka's own
committed offsets are updated afterwards too, only so that Kafka's tools show the lag.

A projection is a small class: which group, which topics, which payload types, and an
`apply(events)` that writes the ORM. Everything else lives here.

Dead letters: an event that cannot be decoded or applied goes to `<topic>.dlq` and the
group moves on, unless too many of them fail (DeadLetterLimit): then it stops. Staff send
dead letters back to one group through its own `<group>.redrive` topic, which its runner
reads like its other topics (same projection, same transaction with the offsets).
"""

from __future__ import annotations

import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from django.conf import settings
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    reset_queries,
    transaction,
)

from foodsite import tracing
from foodsite.events import Event, InvalidEvent, decode
from foodsite.kafka.client_log import client_log_config
from foodsite.kafka.topics import (
    dead_letter_topic,
    group_name,
    leader_moving,
    logical_name,
    redrive_topic,
    topic_name,
)
from foodsite.live import announce
from foodsite.metrics import ConsumerMetrics
from foodsite.models import ConsumerOffset

log = logging.getLogger(__name__)
# One line per applied event, with its trace id (LOG_EVENTS_LEVEL=WARNING silences it).
events_log = logging.getLogger("foodsite.kafka.events")


class TransientError(Exception):
    """Raised by a projection for a failure worth retrying (the batch is retried, not dead-lettered)."""


# Database busy or gone, broker unreachable: wait and retry the same batch.
TRANSIENT_ERRORS = (TransientError, OperationalError, InterfaceError, KafkaException)


class ConsumedEvent(NamedTuple):  # a tuple: created for every event, it must be cheap
    # Where the event was first published (logical topic name, e.g. "orders"), also for an
    # event re-driven to the group: projections see the same thing either way.
    topic: str
    partition: int
    offset: int
    event: Event
    traceparent: str = ""  # the request that caused it (foodsite.tracing), "" if unknown

    @property
    def payload(self):
        return self.event.payload


class Projection(ABC):
    """A read model fed by one consumer group."""

    group: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]
    handles: ClassVar[tuple[type, ...]]  # payload classes to apply; other valid events are skipped
    redrive: ClassVar[bool] = True  # also read `<group>.redrive`, where staff re-drive dead letters

    def decode(self, message: Message) -> Event:
        """The message as an event; InvalidEvent makes it a dead letter."""
        return decode_message(message)

    @abstractmethod
    def apply(self, events: list[ConsumedEvent]) -> None:
        """Write a batch to the database. Runs inside the runner's transaction."""

    @abstractmethod
    def reset(self) -> None:
        """Delete everything the projection wrote (before a replay). Runs in a transaction."""

    def live_streams(self, events: list[ConsumedEvent]) -> set[str]:
        """The live pages this committed batch changed (foodsite.live); none by default."""
        return set()


@dataclass
class RunStats:
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    fenced: int = 0
    started: float = field(default_factory=time.monotonic)


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


class PartitionFenced(Exception):
    """Another member of the group moved a partition's offset while we were working."""


Position = tuple[str, int]  # (logical topic, partition)


class ConsumerRunner:
    def __init__(
        self,
        projection: Projection,
        *,
        batch_size: int = 1000,
        poll_timeout: float = 0.2,
        consumer_config: dict | None = None,
        on_batch: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.projection = projection
        self.group = group_name(projection.group)
        self._logical = {topic_name(t): t for t in projection.topics}  # real name -> logical
        self._redrive = topic_name(redrive_topic(projection.group)) if projection.redrive else None
        if self._redrive:
            self._logical[self._redrive] = redrive_topic(projection.group)
        self.dead_letter_limit = DeadLetterLimit(settings.DLQ_MAX_SHARE, settings.DLQ_WINDOW)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.stats = RunStats()
        self.metrics = ConsumerMetrics(projection.group)  # the same counts, for /metrics
        self.on_batch = on_batch  # called after each committed batch, e.g. a progress bar
        self._stopping = False
        # Next offset per owned partition as stored in the database; None = no row yet.
        self._positions: dict[Position, int | None] = {}
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
                "group.id": self.group,
                "client.id": f"{self.group}-consumer",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Range assigns the same partition numbers of co-partitioned topics to the
                # same member, so an order and its payment meet in one consumer.
                "partition.assignment.strategy": "range",
                # A killed member gives its partitions back within seconds instead of 45 s.
                "session.timeout.ms": settings.KAFKA_CONSUMER_SESSION_TIMEOUT_MS,
                "queued.max.messages.kbytes": settings.KAFKA_CONSUMER_PREFETCH_KB,
                **client_log_config("consumer"),
                **(consumer_config or {}),
            }
        )
        self._producer = Producer(  # dead letters and live notices
            {
                "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
                "enable.idempotence": True,
                "acks": "all",
                # A live notice is one message per batch, and a page waits for it: send at
                # once rather than after librdkafka's default 5 ms linger.
                "linger.ms": 0,
                **client_log_config("dead_letters"),
            }
        )

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        """Finish the current batch, then leave the group (safe from a signal handler)."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, *, until_caught_up: bool = False, timeout: float | None = None) -> RunStats:
        """Consume until stop() (or, for tests and replays, until every owned partition is
        read to its end). Always leaves the group cleanly. Raises DeadLetterLimitExceeded
        when too many events fail."""
        deadline = None if timeout is None else time.monotonic() + timeout
        topics = list(self._logical)
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("%s consuming %s", self.group, ", ".join(topics))
        try:
            while not self._stopping:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self.group} did not catch up within {timeout} s")
                messages = self._next_batch()
                if messages:
                    self._process_with_retry(messages)
                self._producer.poll(0)  # its delivery reports and log lines, as they come
                if until_caught_up and len(messages) < self.batch_size and self._caught_up():
                    break
                # Consumers live for days: drop connections past CONN_MAX_AGE or broken, and
                # the DEBUG query log (Django clears it per request; a consumer has none, so it
                # grew to 9,000 queries with their SQL: +54 MB RSS over 1,000,000 events).
                close_old_connections()
                reset_queries()
        except DeadLetterLimitExceeded as exc:
            log.error(
                "%s STOPPED: %s. A broken deploy rather than bad events? Nothing of the last batch was applied "
                "or dead-lettered and the group's offsets stay before it: fix, then start the service again.",
                self.group,
                exc,
            )
            raise
        finally:
            self._consumer.close()
            self._producer.flush(10)
            close_old_connections()
        return self.stats

    def _next_batch(self) -> list[Message]:
        """Wait for the first message only, then take what is already fetched, up to the
        batch size, without waiting: a lone event goes at once (consume(n, timeout) held it
        for the whole timeout), and a backlog still fills whole batches."""
        messages = self._consumer.consume(1, self.poll_timeout)
        if messages and self.batch_size > 1:
            messages.extend(self._consumer.consume(self.batch_size - 1, 0))
        return messages

    def _sleep(self, seconds: float) -> None:
        # In short steps, so that SIGTERM during a long backoff still exits promptly.
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, seconds))

    def backlog(self) -> int:
        """Events retained in the projection's topics from the earliest offset (replay's total)."""
        total = 0
        for name in self._logical:
            partitions = self._consumer.list_topics(name, timeout=10).topics[name].partitions
            for partition in partitions:
                low, high = self._end_offsets(TopicPartition(name, partition))
                total += high - low
        return total

    def _end_offsets(self, tp: TopicPartition, timeout: float = 30) -> tuple[int, int]:
        # A leader being elected (a broker of the cluster gone) or just set up answers
        # "not leader" for a moment: ask again rather than fail the replay.
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._consumer.get_watermark_offsets(tp, timeout=10)
            except KafkaException as exc:
                if not leader_moving(exc) or time.monotonic() > deadline:
                    raise
                log.info("%s: no end offsets for %s[%d] yet: %s", self.group, tp.topic, tp.partition, exc)
                time.sleep(0.2)

    def reset(self) -> None:
        """Forget the projection and the group's position: the next run starts from the
        earliest retained event. Only while no member of the group is running."""
        with transaction.atomic():
            self.projection.reset()
            ConsumerOffset.objects.filter(group=self.group).delete()

    # -- rebalancing --------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._stored_offsets(partitions)
        for tp in partitions:
            key = (logical_name(tp.topic), tp.partition)
            self._positions[key] = stored.get(key)
            tp.offset = stored.get(key, OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("%s assigned %s", self.group, _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop((logical_name(tp.topic), tp.partition), None)
        log.info("%s revoked %s", self.group, _describe(partitions))

    def _stored_offsets(self, partitions: list[TopicPartition]) -> dict[Position, int]:
        close_old_connections()
        topics = {logical_name(tp.topic) for tp in partitions}
        rows = ConsumerOffset.objects.filter(group=self.group, topic__in=topics)
        return {(row.topic, row.partition): row.next_offset for row in rows}

    def _caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            # Every fetch brings the partition's high watermark; asking the broker instead
            # queues behind the consumer's long-poll fetch (fetch.wait.max.ms) per partition.
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:  # nothing fetched from it yet
                try:
                    low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                except KafkaException as exc:  # e.g. a leader moving: ask again next time
                    log.info("%s: no end offsets for %s[%d] yet: %s", self.group, tp.topic, tp.partition, exc)
                    return False
            position = self._positions.get((logical_name(tp.topic), tp.partition))
            if (position if position is not None else low) < high:
                return False
        return True

    # -- one batch ----------------------------------------------------------------------

    def _process_with_retry(self, messages: list[Message]) -> None:
        delay = 0.2
        while True:
            try:
                self._process(messages)
                return
            except PartitionFenced as exc:
                self.stats.fenced += 1
                log.warning("%s: %s; batch dropped, re-reading positions", self.group, exc)
                self._reseek_to_stored()
                return
            except TRANSIENT_ERRORS as exc:
                if self._stopping:
                    log.warning("%s stopping with a batch not applied (it will be read again): %s", self.group, exc)
                    return
                self.stats.retries += 1
                self.metrics.retry()
                log.warning("%s: transient error, retrying in %.1f s: %s", self.group, delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, 30)
                close_old_connections()

    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        events: list[ConsumedEvent] = []
        sources: dict[int, Message] = {}  # id(event) -> message, to dead-letter the original bytes
        dead: list[tuple[Message, str]] = []  # the batch's dead letters and why
        next_offsets: dict[Position, int] = {}
        skipped = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("%s: consumer error: %s", self.group, error)
                continue
            position = (self._logical[message.topic()], message.partition())
            if position not in self._positions:
                continue  # fetched before its partition was revoked; its new owner reads it
            next_offsets[position] = message.offset() + 1
            try:
                event = self.projection.decode(message)
            except InvalidEvent as exc:
                dead.append((message, str(exc)))
                continue
            if isinstance(event.payload, self.projection.handles):
                traceparent = tracing.header_of(message.headers())
                if message.topic() == self._redrive:
                    origin = self._origin(message)
                    consumed = ConsumedEvent(origin.topic, origin.partition, origin.offset, event, traceparent)
                else:
                    consumed = ConsumedEvent(position[0], message.partition(), message.offset(), event, traceparent)
                events.append(consumed)
                sources[id(consumed)] = message
            else:
                skipped += 1
        if not next_offsets:
            return

        processed = len(events) + len(dead)  # handled or undecodable: what the limit counts
        with transaction.atomic():
            failed = self._apply(events)
            dead.extend((sources[id(event)], reason) for event, reason in failed)
            # Before anything is dead-lettered: a stop leaves no trace of this batch.
            self.dead_letter_limit.check(processed, len(dead))
            if dead:
                self._dead_letter(dead)
            self._save_positions(next_offsets)

        self.dead_letter_limit.count(processed, len(dead))
        self._positions.update(next_offsets)
        if len(events) > len(failed):
            # After the commit: a page re-read now sees the change.
            announce(self._producer, self.projection.live_streams(events), _one_trace(events))
            self._log_applied(events, failed)
        self.metrics.batch(time.perf_counter() - started, len(events) - len(failed), skipped, len(dead))
        self.stats.batches += 1
        self.stats.applied += len(events) - len(failed)
        self.stats.dead_lettered += len(dead)
        self.stats.skipped += skipped
        if self.on_batch is not None:
            self.on_batch(self.stats)
        self._consumer.commit(
            offsets=[TopicPartition(topic_name(t), p, o) for (t, p), o in next_offsets.items()],
            asynchronous=True,
        )

    def _log_applied(self, events: list[ConsumedEvent], failed: list[tuple[ConsumedEvent, str]]) -> None:
        if not events_log.isEnabledFor(logging.INFO):
            return
        failed_ids = {id(event) for event, _ in failed}
        for e in events:
            if id(e) not in failed_ids:
                extra = {"trace_id": tracing.trace_id_of(e.traceparent)}
                events_log.info(
                    "%s applied %s for %s %s[%d]@%d",
                    self.group,
                    e.event.type,
                    e.event.key,
                    e.topic,
                    e.partition,
                    e.offset,
                    extra=extra,
                )

    def _apply(self, events: list[ConsumedEvent]) -> list[tuple[ConsumedEvent, str]]:
        """Apply the batch; if it fails for a non-transient reason, apply event by event so
        that only the events that really fail are dead-lettered."""
        if not events:
            return []
        try:
            with transaction.atomic():
                self.projection.apply(events)
            return []
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            log.warning("%s: batch failed, applying its %d events one by one", self.group, len(events))
        failed = []
        for event in events:
            try:
                with transaction.atomic():
                    self.projection.apply([event])
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                failed.append((event, f"{type(exc).__name__}: {exc}"))
        return failed

    def _origin(self, message: Message) -> Origin:
        """Where the event was first read: its own position, or, for an event re-driven to
        this group, the position the re-drive service wrote in its headers."""
        if message.topic() != self._redrive:
            return Origin(logical_name(message.topic()), message.partition(), message.offset(), 1)
        headers = {key: value for key, value in message.headers() or () if key.startswith("redrive.")}
        try:
            origin = Origin(
                headers["redrive.topic"].decode(),
                int(headers["redrive.partition"]),
                int(headers["redrive.offset"]),
                int(headers["redrive.attempt"]),
            )
            if origin.topic in self.projection.topics:
                return origin
        except (KeyError, ValueError):
            pass
        # Not written by the re-drive service: its origin is where it is.
        return Origin(logical_name(message.topic()), message.partition(), message.offset(), 1)

    def _dead_letter(self, dead: list[tuple[Message, str]]) -> None:
        undelivered: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                undelivered.append(error.str())

        for message, reason in dead:
            origin = self._origin(message)
            # A re-driven event goes back to its source topic's DLQ (a message put in the
            # re-drive topic by hand, without its origin, to the group's first topic's).
            source = origin.topic if origin.topic in self.projection.topics else self.projection.topics[0]
            log.error(
                "%s: dead-lettering %s[%d]@%d (attempt %d): %s",
                self.group,
                origin.topic,
                origin.partition,
                origin.offset,
                origin.attempt,
                reason,
                extra={"trace_id": tracing.trace_id_of(tracing.header_of(message.headers()))},
            )
            # The original headers travel along, not those of an earlier dead letter or re-drive.
            original = [(k, v) for k, v in message.headers() or () if not k.startswith(("dlq.", "redrive."))]
            self._producer.produce(
                topic_name(dead_letter_topic(source)),
                key=message.key(),
                value=message.value(),
                headers=[
                    *original,
                    ("dlq.error", reason.encode()),
                    ("dlq.group", self.group.encode()),
                    # Where this group read it: with dlq.group, what readers de-duplicate by.
                    ("dlq.topic", message.topic().encode()),
                    ("dlq.partition", str(message.partition()).encode()),
                    ("dlq.offset", str(message.offset()).encode()),
                    # Where it was first published (the same, unless re-driven), and how many
                    # times this group has now failed on it.
                    ("dlq.origin.topic", topic_name(origin.topic).encode()),
                    ("dlq.origin.partition", str(origin.partition).encode()),
                    ("dlq.origin.offset", str(origin.offset).encode()),
                    ("dlq.attempt", str(origin.attempt).encode()),
                ],
                on_delivery=delivered,
            )
        # The offsets move past these events when the transaction commits: they must be
        # safely in the dead-letter topic first.
        if self._producer.flush(30) > 0:
            raise TransientError("dead-letter topic did not acknowledge in time")
        if undelivered:  # e.g. a topic missing: retrying beats losing the event
            raise TransientError(f"dead letters refused: {undelivered[0]}")

    def _save_positions(self, next_offsets: dict[Position, int]) -> None:
        for (topic, partition), next_offset in next_offsets.items():
            expected = self._positions[(topic, partition)]
            if expected is None:
                try:
                    with transaction.atomic():
                        ConsumerOffset.objects.create(
                            group=self.group, topic=topic, partition=partition, next_offset=next_offset
                        )
                except IntegrityError as exc:
                    raise PartitionFenced(f"{topic}[{partition}] was started by another member") from exc
                continue
            moved = ConsumerOffset.objects.filter(
                group=self.group, topic=topic, partition=partition, next_offset=expected
            ).update(next_offset=next_offset)
            if moved != 1:
                raise PartitionFenced(f"{topic}[{partition}] moved past {expected} under us")

    def _reseek_to_stored(self) -> None:
        assignment = self._consumer.assignment()
        stored = self._stored_offsets(assignment)
        for tp in assignment:
            key = (logical_name(tp.topic), tp.partition)
            self._positions[key] = stored.get(key)
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, stored.get(key, OFFSET_BEGINNING)))


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _one_trace(events: list[ConsumedEvent]) -> str:
    """The batch's trace when all its events share one (a live order's step), else "": a
    notice about several orders' events belongs to none of them."""
    traces = {e.traceparent for e in events}
    return traces.pop() if len(traces) == 1 else ""


def decode_message(message: Message) -> Event:
    """Decode a consumed message by its `content-type` header (JSON or Avro; none means JSON:
    every event from before Avro, and bare producers)."""
    content_type = None
    for key, value in message.headers() or ():  # a plain loop: this runs for every event
        if key == "content-type":
            content_type = value
            break
    return decode(message.value(), content_type=content_type)
