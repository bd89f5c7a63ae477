"""The consume loop every projection shares: poll, decode, apply, store offsets, dead letters.

Exactly-once into the database: the projection's writes and the group's next offsets are
saved in ONE transaction (eventing.offsets), and on assignment the consumer seeks to the
offsets stored there. A crash at any instant either keeps both or neither. Kafka's own
committed offsets are updated afterwards too, only so that Kafka's tools show the lag.

Dead letters: an event that cannot be decoded or applied goes to `<topic>.dlq` and the
group moves on, unless too many of them fail (eventing.dead_letters.DeadLetterLimit): then
it stops. Staff send dead letters back to one group through its own `<group>.redrive` topic,
which its runner reads like its other topics (same projection, same transaction).

After each commit the runner reports to the host's hooks (eventing.hooks): the metrics, and
what should follow a change (the project's live pages).
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from django.db import close_old_connections, reset_queries, transaction

from eventing import hooks, tracing
from eventing.clients import consumer_config, producer_config
from eventing.conf import settings
from eventing.dead_letters import DeadLetterLimit, DeadLetterLimitExceeded, DeadLetterWriter, origin_of
from eventing.offsets import OffsetStore, PartitionFenced, Position
from eventing.projection import TRANSIENT_ERRORS, ConsumedEvent, InvalidEvent, Projection
from eventing.topics import DEAD_LETTER_MAX_BYTES, group_name, leader_moving, logical_name, redrive_topic, topic_name

__all__ = ["ConsumerRunner", "DeadLetterLimitExceeded", "RunStats", "freeze_startup_objects"]

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.kafka.runner")
# The applied events, each with its order and trace id, a line per EVENTS_PER_LOG_LINE of a
# partition (LOG_EVENTS_LEVEL=WARNING silences it).
events_log = logging.getLogger("foodsite.kafka.events")
# A line per event was a fifth to a third of the stats consumer's time (py-spy: the record,
# the filter, the format and a write each); 32 events keep a line near 3 KB, below what log
# shippers split (Docker: 16 KB), and `grep <order id>` still finds the event's line.
EVENTS_PER_LOG_LINE = 32


@dataclass
class RunStats:
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    fenced: int = 0
    started: float = field(default_factory=time.monotonic)


class ConsumerRunner:
    def __init__(
        self,
        projection: Projection,
        *,
        batch_size: int = 1000,
        poll_timeout: float = 0.2,
        consumer_config_overrides: dict | None = None,
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
        self.on_batch = on_batch  # called after each committed batch, e.g. a progress bar
        self._metrics = hooks.metrics()
        self._tags = {"group": projection.group}
        self._after_commit = hooks.after_commit()
        self._offsets = OffsetStore(self.group)
        self._stopping = False
        # Next offset per owned partition as stored in the database; None = no row yet.
        self._positions: dict[Position, int | None] = {}
        self._consumer = Consumer(
            consumer_config(
                self.group,
                "consumer",
                **{
                    "client.id": f"{self.group}-consumer",
                    "auto.offset.reset": "earliest",
                    # Range assigns the same partition numbers of co-partitioned topics to the
                    # same member, so an order and its payment meet in one consumer.
                    "partition.assignment.strategy": "range",
                    # A killed member gives its partitions back within seconds instead of 45 s.
                    "session.timeout.ms": settings.KAFKA_CONSUMER_SESSION_TIMEOUT_MS,
                    "queued.max.messages.kbytes": settings.KAFKA_CONSUMER_PREFETCH_KB,
                    **(consumer_config_overrides or {}),
                },
            )
        )
        # Dead letters, and the after-commit hook's messages (live notices: sent at once
        # rather than after a linger, a page waits for them).
        self._producer = Producer(
            producer_config("dead_letters", **{"linger.ms": 0, "message.max.bytes": DEAD_LETTER_MAX_BYTES})
        )
        self._dead_letters = DeadLetterWriter(self._producer, self.group, tuple(projection.topics), self._redrive)

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
            self._offsets.forget()

    # -- rebalancing --------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._offsets.stored({logical_name(tp.topic) for tp in partitions})
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
            if (position if position is not None else low) < high and self._fetched_to(tp) < high:
                return False
        return True

    def _fetched_to(self, tp: TopicPartition) -> int:
        """Where the consumer's fetch stands in the partition. A transactional producer's log
        (Kafka Connect's exactly-once source, the Debezium relay) ends in a commit marker, which
        takes an offset and is never handed to us: the stored position stays one short of the end
        while the fetch position has passed the marker."""
        return self._consumer.position([tp])[0].offset

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
                self._metrics.increment("consumer.retries", 1, self._tags)
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
                    origin = origin_of(message, redrive_topic=self._redrive, topics=self.projection.topics)
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
                # The offsets move past these events when the transaction commits: they
                # must be safely in the dead-letter topic first.
                self._dead_letters.write(dead)
            self._offsets.save(next_offsets, self._positions)

        self.dead_letter_limit.count(processed, len(dead))
        self._positions.update(next_offsets)
        applied = _without(events, failed)
        if applied:
            if self._after_commit is not None:
                self._after_commit(self.projection, applied, self._producer)
            self._log_applied(applied)
        self._report(time.perf_counter() - started, len(applied), skipped, len(dead))
        self.stats.batches += 1
        self.stats.applied += len(applied)
        self.stats.dead_lettered += len(dead)
        self.stats.skipped += skipped
        if self.on_batch is not None:
            self.on_batch(self.stats)
        self._consumer.commit(
            offsets=[TopicPartition(topic_name(t), p, o) for (t, p), o in next_offsets.items()],
            asynchronous=True,
        )

    def _report(self, seconds: float, applied: int, skipped: int, dead_lettered: int) -> None:
        group = self.projection.group
        self._metrics.timing("consumer.batch", seconds, self._tags)
        for outcome, count in (("applied", applied), ("skipped", skipped), ("dead_lettered", dead_lettered)):
            self._metrics.increment("consumer.events", count, {"group": group, "outcome": outcome})

    def _log_applied(self, applied: list[ConsumedEvent]) -> None:
        """`stats applied 2 events of orders[1]: order.placed <order id>@<offset> trace=<id>, ...`;
        a line whose events share one trace (one order's step) carries it as the record's own."""
        if not events_log.isEnabledFor(logging.INFO):
            return
        by_partition: dict[tuple[str, int], list[ConsumedEvent]] = {}
        for e in applied:
            by_partition.setdefault((e.topic, e.partition), []).append(e)
        for (topic, partition), events in by_partition.items():
            for start in range(0, len(events), EVENTS_PER_LOG_LINE):
                line = events[start : start + EVENTS_PER_LOG_LINE]
                traces = [tracing.trace_id_of(e.traceparent) for e in line]
                shared = traces[0] if traces.count(traces[0]) == len(traces) else ""
                described = ", ".join(
                    f"{e.event.type} {e.event.key}@{e.offset}" + (f" trace={trace}" if trace and not shared else "")
                    for e, trace in zip(line, traces, strict=True)
                )
                events_log.info(
                    "%s applied %d event%s of %s[%d]: %s",
                    self.group,
                    len(line),
                    "" if len(line) == 1 else "s",
                    topic,
                    partition,
                    described,
                    extra={"trace_id": shared, "trace_ids": sorted({t for t in traces if t})},
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

    def _reseek_to_stored(self) -> None:
        assignment = self._consumer.assignment()
        stored = self._offsets.stored({logical_name(tp.topic) for tp in assignment})
        for tp in assignment:
            key = (logical_name(tp.topic), tp.partition)
            self._positions[key] = stored.get(key)
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, stored.get(key, OFFSET_BEGINNING)))


def freeze_startup_objects() -> None:
    """For a process that consumes from now on: put what start-up left alive (Django, the apps,
    the settings: most of the heap) out of the cycle collector's reach. Each full collection
    walked all of it again, ~35 ms each, 8% of the stats consumer's CPU (gc.callbacks, 100,000
    events); batches of events make collections frequent. Objects frozen are still freed when
    their last reference goes; only cycles among them stay. Process-wide: call it from a
    process's entry point (ConsumerCommand), not from code a test suite runs many times."""
    gc.collect()
    gc.freeze()


def _without(events: list[ConsumedEvent], failed: list[tuple[ConsumedEvent, str]]) -> list[ConsumedEvent]:
    if not failed:
        return events
    failed_ids = {id(event) for event, _ in failed}
    return [e for e in events if id(e) not in failed_ids]


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
