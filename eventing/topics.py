"""The topics this system owns, their names and their settings, and `ensure_topics`, which
creates them or sets their settings (init_kafka, the launcher, the test fixtures).

The event topics are the contract's (contract.events.TOPICS), each with its dead-letter
topic; each registered projection that takes re-drives has `<group>.redrive`; the project's
notice topics (EVENTING_NOTICE_TOPICS: live pages' notices) have one partition each."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, OffsetSpec

from contract.events import DELIVERY_STATUS, ORDERS, PAYMENTS
from contract.events import TOPICS as SOURCE_TOPICS
from eventing.clients import admin_client
from eventing.conf import settings
from eventing.registry import redrivable_groups

__all__ = ["DELIVERY_STATUS", "ORDERS", "PAYMENTS", "SOURCE_TOPICS", "admin_client"]

# Broker answers while a partition's leadership is being set up or moved: a just-created
# topic, or a leader election in a cluster. librdkafka does not flag them retriable.
LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
}


# A dead letter is its event, whole, plus the dlq.* headers (the reason cut to
# MAX_REASON characters). Its topic, and the re-drive topic it may go back through, take
# 64 KiB more than the source topics do by the broker's default (message.max.bytes,
# 1,048,588 bytes): an event as large as a producer could publish, a Java one's 1 MiB
# (max.request.size), did not fit once its headers were added, the broker refused the dead
# letter, and the consumer retried that batch every 30 s for ever. The clients that write
# dead letters and re-drives allow as much (librdkafka's default is 1,000,000).
DEAD_LETTER_MAX_BYTES = 1_048_588 + 65_536


def leader_moving(exc: KafkaException) -> bool:
    """Whether asking the same thing again in a moment may succeed."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return error is not None and (error.retriable() or error.code() in LEADER_MOVING)


def topic_name(logical: str) -> str:
    """The real topic name for a logical one (adds the deployment's prefix)."""
    return f"{settings.KAFKA_TOPIC_PREFIX}{logical}"


def logical_name(real: str) -> str:
    prefix = settings.KAFKA_TOPIC_PREFIX
    return real[len(prefix) :] if prefix and real.startswith(prefix) else real


def dead_letter_topic(logical: str) -> str:
    return f"{logical}.dlq"


def redrive_topic(group: str) -> str:
    """Where staff send a group's dead letters back to: only that group reads it
    (deadletters.services.redrive)."""
    return f"{group}.redrive"


def group_name(logical: str) -> str:
    return f"{settings.KAFKA_GROUP_PREFIX}{logical}"


@dataclass(frozen=True)
class TopicSpec:
    name: str  # real name
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass(frozen=True)
class TopicStatus:
    spec: TopicSpec
    created: bool
    partitions: int
    config: dict[str, str]
    replicas: int  # the fewest replicas of any of its partitions
    in_sync: int  # the fewest in-sync replicas of any of its partitions
    updated: tuple[str, ...] = ()  # settings an existing topic had different, now set as declared

    @property
    def state(self) -> str:
        return "created" if self.created else "updated" if self.updated else "exists"


def declared_topics() -> list[TopicSpec]:
    """Every topic, with retention by time and by size set on the topic itself (the seed's
    "mix of both strategies"). orders, payments and delivery-status share the partition
    count so that one order's events land on the same partition number everywhere; so do
    the groups' re-drive topics, so that a re-driven event goes back to the partition number
    it came from, hence to the member that owns that partition of the source topics."""
    config = {
        "retention.ms": str(settings.KAFKA_RETENTION_MS),
        "retention.bytes": str(settings.KAFKA_RETENTION_BYTES),
        # With 3 replicas an acks=all write is on two brokers before it counts: one broker
        # may fail without losing it, and a second failure stops writes instead of risking them.
        "min.insync.replicas": str(min(2, settings.KAFKA_REPLICATION_FACTOR)),
        # Never elect a replica that was out of sync: it would silently drop acknowledged events.
        "unclean.leader.election.enable": "false",
    }
    letters_config = {**config, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}
    logical = [
        *((t, config) for t in SOURCE_TOPICS),
        *((dead_letter_topic(t), letters_config) for t in SOURCE_TOPICS),
        *((redrive_topic(group), letters_config) for group in redrivable_groups()),
    ]
    specs = [
        TopicSpec(
            name=topic_name(name),
            partitions=settings.KAFKA_PARTITIONS,
            replication_factor=settings.KAFKA_REPLICATION_FACTOR,
            config=topic_config,
        )
        for name, topic_config in logical
    ]
    # Notices (not events: nothing is rebuilt from them) are kept briefly, in one partition:
    # they need no order and no scale-out, and every reader reads all of them.
    for name, retention_ms in settings.EVENTING_NOTICE_TOPICS.items():
        notice_config = {**config, "retention.ms": str(retention_ms)}
        specs.append(TopicSpec(topic_name(name), 1, settings.KAFKA_REPLICATION_FACTOR, notice_config))
    return specs


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30) -> list[TopicStatus]:
    """Create the topics that are missing; set the declared settings (retention, min ISR,
    unclean election) on existing ones where they differ. Idempotent. Partition counts and
    replication factors of existing topics are left as they are (the caller warns)."""
    existing = admin.list_topics(timeout=timeout).topics
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
                for s in missing
            ],
            operation_timeout=timeout,
        )
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                # Another init run won the race: that is the state we wanted.
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    metadata = _wait_for_metadata(admin, [spec.name for spec in specs], timeout)
    if missing:
        _wait_for_leaders(admin, metadata, [spec.name for spec in missing], timeout)
    configs = _describe_configs(admin, [spec.name for spec in specs], timeout)
    updated = {
        spec.name: tuple(key for key, value in spec.config.items() if configs[spec.name][key].value != value)
        for spec in specs
        if spec not in missing
    }
    changes = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(key, spec.config[key], incremental_operation=AlterConfigOpType.SET)
                for key in updated[spec.name]
            ],
        )
        for spec in specs
        if updated.get(spec.name)
    ]
    if changes:
        for future in admin.incremental_alter_configs(changes).values():
            future.result()
    return [
        TopicStatus(
            spec=spec,
            created=spec in missing,
            partitions=len(metadata[spec.name].partitions),
            config={
                key: spec.config[key] if key in updated.get(spec.name, ()) else configs[spec.name][key].value
                for key in spec.config
            },
            replicas=min(len(p.replicas) for p in metadata[spec.name].partitions.values()),
            in_sync=min(len(p.isrs) for p in metadata[spec.name].partitions.values()),
            updated=updated.get(spec.name, ()),
        )
        for spec in specs
    ]


def _wait_for_leaders(admin: AdminClient, metadata: dict, names: list[str], timeout: float) -> None:
    # The metadata names a leader before that broker has taken the partition on: for a few
    # milliseconds it answers NOT_LEADER_FOR_PARTITION, and a replay's end-offset read or a
    # consumer's first fetch right after init would fail on it (seen in CI). Ask each new
    # partition for its end offset until every leader answers.
    waiting = [TopicPartition(name, p) for name in names for p in metadata[name].partitions]
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        answers = admin.list_offsets({tp: OffsetSpec.latest() for tp in waiting}, request_timeout=timeout)
        still = []
        for tp, future in answers.items():
            try:
                future.result()
            except KafkaException as exc:
                if not leader_moving(exc):
                    raise
                still.append(tp)
        waiting = still
        if waiting:
            time.sleep(0.05)


def _describe_configs(admin: AdminClient, names: list[str], timeout: float) -> dict:
    # On a cluster the broker asked may learn of a just-created topic a moment after the one
    # that answered the metadata request: UNKNOWN_TOPIC_OR_PART until then.
    deadline = time.monotonic() + timeout
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    while True:
        try:
            return {res.name: future.result() for res, future in admin.describe_configs(resources).items()}
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART" or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _wait_for_metadata(admin: AdminClient, names: list[str], timeout: float) -> dict:
    # A just-created topic shows in the metadata, with a leader for each partition, a moment
    # after create_topics returns; until then producing or reading offsets fails.
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        ready = all(
            name in topics and topics[name].partitions and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        )
        if ready or time.monotonic() > deadline:
            return topics
        time.sleep(0.1)
