"""Test helpers around the real broker: read a topic, drain a projection, Java's murmur2; the
session's broker frozen for a moment, and a silent one that accepts connections and never answers."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from django.conf import settings

from devstack.kafka_node import LocalKafka
from eventing import outbox
from eventing.models import ConsumerOffset, OutboxEvent
from eventing.producer import get_publisher
from eventing.projection import Projection
from eventing.runner import ConsumerRunner, RunStats
from eventing.topics import redrive_topic, topic_name

log = logging.getLogger(__name__)


def murmur2_partition(key: bytes, partitions: int) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2 + toPositive, as Java's default partitioner."""
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    length = len(key)
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(key[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= key[tail + 2] << 16
    if rest >= 2:
        h ^= key[tail + 1] << 8
    if rest >= 1:
        h ^= key[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    # Right after a topic is created the broker may still answer "not leader" for a moment.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def silent_broker() -> Iterator[str]:
    """The address of a listener that accepts TCP connections and never says a word, like a
    hung broker: a producer pointed at it sends nothing anywhere and hears nothing back."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


@dataclass
class KafkaTestBed:
    bootstrap_servers: str
    node: LocalKafka | None = None  # the broker's process, when the session started it (kafka_on_node)

    def read_topic(self, logical: str, timeout: float = 10) -> list[Message]:
        """Every message now in the topic, all partitions, read without a consumer group."""
        get_publisher().flush(timeout)
        name = topic_name(logical)
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4()}",
                "enable.auto.commit": False,
            }
        )
        try:
            partitions = consumer.list_topics(name, timeout=timeout).topics[name].partitions
            ends = {p: watermarks(consumer, TopicPartition(name, p), timeout)[1] for p in partitions}
            consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
            messages: list[Message] = []
            remaining = sum(ends.values())
            deadline = time.monotonic() + timeout
            while len(messages) < remaining:
                # A short timeout: consume() waits its whole timeout for a full batch.
                messages.extend(m for m in consumer.consume(500, 0.1) if m.error() is None)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"read {len(messages)} of {remaining} messages of {name}")
            return messages
        finally:
            consumer.close()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """While inside, the broker's process is stopped (SIGSTOP): it holds every connection and
        request unanswered, as in a long GC pause or on a stalled disk; once it goes on (SIGCONT)
        it handles what it was sent, appending each write it had received. Keep it short: its
        own controller would fence it past its session timeout (5 s, devstack.kafka_node)."""
        process = self.node.process if self.node is not None else None
        assert process is not None, "freezing the broker needs the kafka_on_node fixture"
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

    def produce_raw(
        self, logical: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap_servers, "partitioner": "murmur2_random"})
        producer.produce(topic_name(logical), key=key, value=value, headers=headers)
        assert producer.flush(10) == 0

    def drain(self, projection: Projection, timeout: float = 60) -> RunStats:
        """Run the projection's consumer until it has read everything published so far.

        When a count comes out short, this says on which side: an event Kafka did not
        acknowledge (logged here, with the outbox's rows still unsent), or a consumer that
        stopped before the end of the log (an assertion, positions against the broker's ends)."""
        assert get_publisher().flush(10) == 0, "events not delivered to the broker"
        outbox.mark_delivered()
        unsent = list(OutboxEvent.objects.filter(sent_at__isnull=True).values_list("event_type", "key"))
        if unsent and settings.OUTBOX_RELAY == "celery":  # some tests keep Kafka away on purpose: a clue
            log.warning("outbox events Kafka has not acknowledged before the drain: %s", unsent)
        runner = ConsumerRunner(projection, poll_timeout=0.2)
        stats = runner.run(until_caught_up=True, timeout=timeout)
        topics = (*projection.topics, *([redrive_topic(projection.group)] if projection.redrive else []))
        short = self._short_of_the_end(runner.group, topics)
        assert not short, f"{runner.group} stopped before the end of the log: {short}"
        return stats

    def _short_of_the_end(self, group: str, logical_topics: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        """{"topic[partition]": (stored next offset, broker's end)} where the group is behind."""
        stored = {(row.topic, row.partition): row.next_offset for row in ConsumerOffset.objects.filter(group=group)}
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": f"ends-{uuid.uuid4()}"})
        try:
            short = {}
            for logical in logical_topics:
                name = topic_name(logical)
                for partition in consumer.list_topics(name, timeout=10).topics[name].partitions:
                    low, high = watermarks(consumer, TopicPartition(name, partition), timeout=10)
                    position = stored.get((logical, partition), low)
                    if position < high and self._messages_after(name, partition, position, high):
                        short[f"{logical}[{partition}]"] = (position, high)
            return short
        finally:
            consumer.close()

    def _messages_after(self, name: str, partition: int, position: int, high: int) -> bool:
        """Whether a message lies in [position, high): a transactional producer's commit
        markers take offsets too, and a log may end in one (the Debezium relay's)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": f"ends-{uuid.uuid4()}"})
        try:
            tp = TopicPartition(name, partition, position)
            consumer.assign([tp])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    return message.offset() < high
                if consumer.position([tp])[0].offset >= high:
                    return False
            return True
        finally:
            consumer.close()

    @property
    def partitions(self) -> int:
        return settings.KAFKA_PARTITIONS
