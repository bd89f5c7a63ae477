"""The Kafka view: the seed's offset picture, read from the broker (the staff page shows it,
/metrics exports it).

For every topic of the system, each partition's low and high (end) offsets, its leader,
replicas and in-sync replicas; the brokers, with warnings for a broker that is down and for
under-replicated and offline partitions; for every
consumer group of the system, its committed offset per partition, the lag (end - committed)
and its members with their assigned partitions. Logical names throughout (prefixes off).

Lag uses the offsets committed to Kafka. The runner commits them asynchronously after each
batch's database transaction (where the real position lives, `ConsumerOffset`), so Kafka's
figure can trail the database's by one batch; both are shown.

Everything is read with short timeouts inside one budget: the page must render, with the
reason, when Kafka is down or slow, never hang or fail.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field, replace

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from eventing import schema_registry
from eventing.clients import admin_client
from eventing.conf import settings
from eventing.debezium import RelayState, relay_state
from eventing.models import ConsumerOffset
from eventing.registry import known_groups
from eventing.topics import declared_topics, leader_moving, logical_name

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("stats.kafka_view")

TIMEOUT_S = 3.0  # the whole view's budget


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    # None: unknown this time (offline, nobody to ask; or its leader moving, ask again later)
    low: int | None  # the earliest retained offset
    high: int | None  # the end: the offset the next event will get
    leader: int = -1  # broker id; -1: no leader, the partition is offline
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()  # the in-sync replicas: those an acks=all write waits for

    @property
    def retained(self) -> int:
        return 0 if self.low is None or self.high is None else self.high - self.low

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def out_of_sync(self) -> tuple[int, ...]:
        return tuple(r for r in self.replicas if r not in self.isr)


@dataclass(frozen=True)
class TopicOffsets:
    name: str  # logical
    partitions: list[PartitionOffsets]
    # With a schema registry: (subject, latest version) of each event type the topic carries.
    schemas: tuple[tuple[str, int], ...] = ()

    @property
    def end(self) -> int:
        """Events ever written (the sum of the end offsets; offline partitions unknown)."""
        return sum(p.high for p in self.partitions if p.high is not None)

    @property
    def retained(self) -> int:
        return sum(p.retained for p in self.partitions)


@dataclass(frozen=True)
class GroupPartition:
    topic: str  # logical
    partition: int
    low: int | None  # None (and end): the partition is offline
    end: int | None
    committed: int | None  # in Kafka; None: nothing committed yet
    stored: int | None  # the runner's position in the database
    owner: str | None  # the member's client id, if assigned

    @property
    def lag(self) -> int | None:
        # Nothing committed yet: the runner starts at the earliest retained event.
        start = self.low if self.committed is None else self.committed
        if self.end is None or start is None:
            return None  # offline, or its leader moving: not known this time
        return self.end - start

    @property
    def stored_lag(self) -> int | None:
        """Lag from the runner's real position, the one in the database (/metrics)."""
        if self.end is None or self.stored is None:
            return self.lag
        return self.end - self.stored

    @property
    def done_percent(self) -> float:
        return 100.0 if not self.end else 100.0 * (self.committed or 0) / self.end


@dataclass(frozen=True)
class GroupMember:
    client_id: str
    host: str
    member_id: str
    partitions: list[str]  # "orders[0]"


@dataclass(frozen=True)
class GroupOffsets:
    name: str  # logical
    state: str
    members: list[GroupMember]
    partitions: list[GroupPartition]
    error: str | None = None  # the broker would not describe this group just now

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions if p.lag is not None)


@dataclass(frozen=True)
class Broker:
    id: int
    address: str  # host:port; "" when down (only live brokers are in the metadata)
    live: bool
    replicas: int  # partitions (of every topic on the cluster) it holds a replica of


@dataclass(frozen=True)
class KafkaView:
    topics: list[TopicOffsets] = field(default_factory=list)
    groups: list[GroupOffsets] = field(default_factory=list)
    error: str | None = None  # "Kafka unreachable: <reason>" and nothing else shown
    took_ms: int = 0
    brokers: list[Broker] = field(default_factory=list)
    # The metadata answered but offsets or groups did not, within the budget (a broker just
    # killed is still named leader until the controller fences it, and requests to it wait):
    # brokers, partitions and their warnings are shown, offsets unknown, groups left out.
    incomplete: str | None = None
    schema_registry: str = ""  # its URL, when the deployment has one
    schemas_error: str | None = None  # the registry did not say its subjects' versions
    outbox_relay: RelayState | None = None  # with OUTBOX_RELAY=debezium: the connector and its slot

    @property
    def brokers_down(self) -> list[Broker]:
        return [b for b in self.brokers if not b.live]

    def _partitions(self) -> list[tuple[str, PartitionOffsets]]:
        return [(topic.name, p) for topic in self.topics for p in topic.partitions]

    @property
    def under_replicated(self) -> list[str]:
        """ "orders[0]" for each partition with fewer in-sync replicas than replicas."""
        return [f"{name}[{p.partition}]" for name, p in self._partitions() if p.under_replicated and not p.offline]

    @property
    def offline(self) -> list[str]:
        return [f"{name}[{p.partition}]" for name, p in self._partitions() if p.offline]


@dataclass(frozen=True)
class ClusterHealth:
    """What an on-call alert is written on, from the cluster's metadata alone (one request, no
    offsets): the brokers live and down, and the system's partitions that are under-replicated
    or offline. Equal healths mean nothing an operator would be told about has changed."""

    brokers_live: tuple[int, ...] = ()
    brokers_down: tuple[int, ...] = ()
    under_replicated: tuple[str, ...] = ()  # "orders[0]", logical names
    offline: tuple[str, ...] = ()
    error: str | None = None  # the metadata could not be read: "Kafka unreachable: ..."


def health_of(metadata) -> ClusterHealth:
    """The health a metadata answer says (`AdminClient.list_topics`'s ClusterMetadata)."""
    brokers = _brokers(metadata)
    names = [spec.name for spec in declared_topics() if spec.name in metadata.topics]
    under, offline = [], []
    for name in names:
        for p, state in sorted(metadata.topics[name].partitions.items()):
            label = f"{logical_name(name)}[{p}]"
            if state.leader < 0:
                offline.append(label)
            elif len(state.isrs) < len(state.replicas):
                under.append(label)
    return ClusterHealth(
        brokers_live=tuple(b.id for b in brokers if b.live),
        brokers_down=tuple(b.id for b in brokers if not b.live),
        under_replicated=tuple(under),
        offline=tuple(offline),
    )


def cluster_health(admin: AdminClient, timeout: float = TIMEOUT_S) -> ClusterHealth:
    """The cluster's health now, through `admin` (a long-lived client: a watcher asks every
    second or so, and a new client each time would cost threads and connections)."""
    try:
        return health_of(admin.list_topics(timeout=timeout))
    except KafkaException as exc:
        return ClusterHealth(error=f"Kafka unreachable: {_reason(exc)} (at {settings.KAFKA_BOOTSTRAP_SERVERS})")


def kafka_view(timeout: float = TIMEOUT_S) -> KafkaView:
    started = time.monotonic()
    # Fail fast on a dead address instead of librdkafka's 30 s connection setup.
    admin = admin_client(**{"socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000))})
    try:
        view = _Reader(admin, timeout).read()
    except (KafkaException, concurrent.futures.TimeoutError, TimeoutError) as exc:
        view = KafkaView(error=f"Kafka unreachable: {_reason(exc)} (at {settings.KAFKA_BOOTSTRAP_SERVERS})")
        log.warning("stats page: %s", view.error)
    if view.incomplete:
        log.warning("stats page: %s", view.incomplete)
    if schema_registry.configured() and view.error is None:
        view = _with_schemas(view)
    if settings.OUTBOX_RELAY == "debezium":
        # Asked even when Kafka is not: the relay's state is half of what an operator needs then.
        view = replace(view, outbox_relay=relay_state(timeout=max(0.5, timeout - (time.monotonic() - started))))
    return replace(view, took_ms=int((time.monotonic() - started) * 1000))


def _with_schemas(view: KafkaView) -> KafkaView:
    try:
        latest = schema_registry.latest_versions_by_topic()
    except RuntimeError as exc:
        log.warning("stats page: %s", exc)
        return replace(view, schema_registry=settings.SCHEMA_REGISTRY_URL, schemas_error=str(exc))
    topics = [replace(topic, schemas=tuple(latest.get(topic.name, ()))) for topic in view.topics]
    return replace(view, topics=topics, schema_registry=settings.SCHEMA_REGISTRY_URL)


class _Reader:
    def __init__(self, admin: AdminClient, timeout: float) -> None:
        self.admin = admin
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {self.timeout:g} s")
        return left

    def result(self, future: concurrent.futures.Future):
        return future.result(timeout=self.remaining())

    def offsets(self, futures: dict) -> dict[tuple[str, int], int]:
        """(topic, partition) -> offset, for the partitions that answered. One whose leader is
        moving (an election on the cluster) is left out, shown unknown like an offline one for
        this refresh, rather than failing the whole view."""
        answered = {}
        for tp, future in futures.items():
            try:
                answered[(tp.topic, tp.partition)] = self.result(future).offset
            except KafkaException as exc:
                if not leader_moving(exc):
                    raise
        return answered

    def read(self) -> KafkaView:
        metadata = self.admin.list_topics(timeout=self.remaining())
        try:
            return self.offsets_and_groups(metadata)
        except (KafkaException, TimeoutError) as exc:
            # What the metadata says (a broker down, partitions out of sync) is what an
            # operator most needs while the cluster is in trouble: never hidden behind
            # "unreachable" because the offsets' answers were slower than the budget.
            return KafkaView(
                _topics(metadata, {}, {}),
                brokers=_brokers(metadata),
                incomplete=f"offsets and consumer groups not read: {_reason(exc)}",
            )

    def offsets_and_groups(self, metadata) -> KafkaView:
        # The system's topics, in declaration order, as far as they exist.
        names = [spec.name for spec in declared_topics() if spec.name in metadata.topics]
        # An offline partition (no leader) has nobody to answer for its offsets.
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p, state in sorted(metadata.topics[name].partitions.items())
            if state.leader >= 0
        ]

        # Everything below goes out at once; each answer is awaited within the budget.
        request_timeout = self.remaining()
        lows = (
            self.admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions}, request_timeout=request_timeout)
            if partitions
            else {}
        )
        highs = (
            self.admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=request_timeout)
            if partitions
            else {}
        )
        listing = self.admin.list_consumer_groups(request_timeout=request_timeout)

        known = known_groups()
        prefix = settings.KAFKA_GROUP_PREFIX
        on_broker = {g.group_id for g in self.result(listing).valid if g.group_id.startswith(prefix)}
        groups = sorted({*on_broker, *(prefix + name for name in known)})
        # Only groups the broker knows are asked about: a never-started one has nothing to say
        # (and on a fresh broker asking fails until the offsets topic exists).
        asked = sorted(on_broker)
        descriptions = self.admin.describe_consumer_groups(asked, request_timeout=self.remaining()) if asked else {}
        committed_futures = {
            group: self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.remaining()
            )[group]
            for group in asked
        }

        low, high = self.offsets(lows), self.offsets(highs)
        topics = _topics(metadata, low, high)

        stored = _stored_positions(groups)
        views = []
        for group in groups:
            logical_group = group[len(prefix) :]
            state, error = "not started", None
            members: list[GroupMember] = []
            owners: dict[tuple[str, int], str] = {}
            committed: dict[tuple[str, int], int] = {}
            if group in on_broker:
                try:
                    description = self.result(descriptions[group])
                    committed = {
                        (tp.topic, tp.partition): tp.offset
                        for tp in self.result(committed_futures[group]).topic_partitions
                        if tp.offset >= 0 and tp.error is None
                    }
                    state = _state(description)
                    members, owners = _members(description)
                except KafkaException as exc:  # this group only, e.g. its coordinator moving
                    state, error = "unknown", f"not described: {_reason(exc)}"
            # The group's topics: what its projection reads, plus whatever it committed or
            # was assigned (a group of the system this code does not declare).
            topic_names = {name for name in names if logical_name(name) in known.get(logical_group, ())}
            topic_names |= {t for t, _ in committed} | {t for t, _ in owners}
            topic_names &= set(names)
            if not topic_names:
                continue  # same prefix, not one of ours (e.g. a tool's group)
            rows = [
                GroupPartition(
                    topic=logical_name(name),
                    partition=p,
                    low=low.get((name, p)),
                    end=high.get((name, p)),
                    committed=committed.get((name, p)),
                    stored=stored.get((group, logical_name(name), p)),
                    owner=owners.get((name, p)),
                )
                for name in names
                if name in topic_names
                for p in sorted(metadata.topics[name].partitions)
            ]
            views.append(GroupOffsets(logical_group, state, members, rows, error))
        return KafkaView(topics, views, brokers=_brokers(metadata))


def _topics(metadata, low: dict[tuple[str, int], int], high: dict[tuple[str, int], int]) -> list[TopicOffsets]:
    names = [spec.name for spec in declared_topics() if spec.name in metadata.topics]
    return [
        TopicOffsets(
            logical_name(name),
            [
                PartitionOffsets(
                    p,
                    low.get((name, p)),
                    high.get((name, p)),
                    leader=state.leader,
                    replicas=tuple(state.replicas),
                    isr=tuple(sorted(state.isrs)),
                )
                for p, state in sorted(metadata.topics[name].partitions.items())
            ],
        )
        for name in names
    ]


def _brokers(metadata) -> list[Broker]:
    """The live brokers (the metadata's), and the down ones: a broker id that a partition of
    any topic still names among its replicas but that is not live. KRaft keeps a fenced or
    stopped broker in the replica lists, so it shows here until it is removed for good."""
    held: dict[int, int] = {}
    for topic in metadata.topics.values():
        for state in topic.partitions.values():
            for replica in state.replicas:
                held[replica] = held.get(replica, 0) + 1
    live = metadata.brokers
    return [
        Broker(
            id=b, address=f"{live[b].host}:{live[b].port}" if b in live else "", live=b in live, replicas=held.get(b, 0)
        )
        for b in sorted({*live, *held})
    ]


def _members(description) -> tuple[list[GroupMember], dict[tuple[str, int], str]]:
    members, owners = [], {}
    for member in sorted(description.members, key=lambda m: (m.client_id, m.member_id)):
        assigned = member.assignment.topic_partitions if member.assignment else []
        for tp in assigned:
            owners[(tp.topic, tp.partition)] = member.client_id
        members.append(
            GroupMember(
                client_id=member.client_id,
                host=member.host.lstrip("/"),
                member_id=member.member_id,
                partitions=[f"{logical_name(tp.topic)}[{tp.partition}]" for tp in sorted(assigned, key=_tp_key)],
            )
        )
    return members, owners


def _tp_key(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition


def _state(description) -> str:
    # ConsumerGroupState.STABLE -> "stable"; EMPTY means no member runs.
    return description.state.name.lower().replace("_", " ")


def _stored_positions(groups: list[str]) -> dict[tuple[str, str, int], int]:
    rows = ConsumerOffset.objects.filter(group__in=groups).values_list("group", "topic", "partition", "next_offset")
    return {(group, topic, partition): offset for group, topic, partition, offset in rows}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
        # Some errors' text is only the request's name ("ConsumerGroupDescribe: "): add the code.
        return f"{error.str().strip()} ({error.name()})"
    return str(exc) or type(exc).__name__
