"""The cluster's health and its watch, as pure logic: what a metadata answer says, and that
the watch hands on each change once (the browser test on the cluster shows it end to end)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from confluent_kafka.admin import BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicMetadata
from django.template.loader import render_to_string

from eventing.kafka_view import ClusterHealth, _Reader, health_of
from eventing.topics import topic_name
from stats.cluster_watch import ClusterWatch, describe


def metadata(live: list[int], partitions: dict[str, list[tuple[int, list[int], list[int]]]]) -> ClusterMetadata:
    """`partitions`: logical topic -> (leader, replicas, isr) per partition."""
    cluster = ClusterMetadata()
    for broker_id in live:
        broker = BrokerMetadata()
        broker.id, broker.host, broker.port = broker_id, "127.0.0.1", 9091 + broker_id
        cluster.brokers[broker_id] = broker
    for logical, states in partitions.items():
        topic = TopicMetadata()
        topic.topic = topic_name(logical)
        for number, (leader, replicas, isr) in enumerate(states):
            partition = PartitionMetadata()
            partition.id, partition.leader, partition.replicas, partition.isrs = number, leader, replicas, isr
            topic.partitions[number] = partition
        cluster.topics[topic.topic] = topic
    return cluster


def test_a_dead_broker_its_partitions_out_of_sync_and_one_without_leader_are_what_the_health_says():
    health = health_of(
        metadata(
            live=[1, 2],
            partitions={
                "orders": [(1, [1, 2, 3], [1, 2]), (2, [2, 3, 1], [2, 3, 1])],
                "payments": [(-1, [3], [])],
            },
        )
    )
    assert health == ClusterHealth(
        brokers_live=(1, 2), brokers_down=(3,), under_replicated=("orders[0]",), offline=("payments[0]",)
    )
    assert describe(health) == (
        "2 broker(s) live; down: 3; 1 offline partition(s): payments[0]; 1 under-replicated partition(s)"
    )


def test_a_healthy_cluster_is_equal_to_itself_read_again():
    answer = {"orders": [(1, [1, 2, 3], [1, 2, 3])]}
    assert health_of(metadata([1, 2, 3], answer)) == health_of(metadata([1, 2, 3], answer))
    assert health_of(metadata([1, 2, 3], answer)).brokers_down == ()


def test_the_watch_hands_on_each_change_once_and_stops_when_nobody_watches():
    healthy = ClusterHealth(brokers_live=(1, 2, 3))
    down = ClusterHealth(brokers_live=(1, 2), brokers_down=(3,), under_replicated=("orders[0]",))
    reads = [healthy, healthy, down, down, down, healthy, healthy]
    seen: list[ClusterHealth] = []
    watch = ClusterWatch(every=0, on_change=seen.append, read=lambda: reads.pop(0))

    async def run() -> None:
        watch.ensure_running(wanted=lambda: bool(reads))
        await watch._task

    asyncio.run(run())
    assert seen == [healthy, down, healthy]
    assert watch.last is None  # a watch started later begins afresh


def test_a_stopped_watch_ends_at_once_though_it_was_asleep_between_reads():
    watch = ClusterWatch(every=3600, on_change=lambda health: None, read=lambda: ClusterHealth(brokers_live=(1,)))

    async def run() -> asyncio.Task:
        watch.ensure_running(wanted=lambda: True)
        task = watch._task
        await asyncio.sleep(0.05)  # it has read once and sleeps for an hour
        watch.stop()
        await asyncio.gather(task, return_exceptions=True)
        return task

    task = asyncio.run(run())
    assert task.cancelled()
    assert watch.last is None


def test_the_watch_hands_an_unchanged_health_on_again_while_the_page_read_after_it_fell_short():
    down = ClusterHealth(brokers_live=(1, 2), brokers_down=(3,))
    unreachable = ClusterHealth(error="Kafka unreachable: timed out")
    reads = [down, down, down, unreachable, unreachable]
    short = [True, False]  # the page's read after the change fell short once, then was whole
    seen: list[ClusterHealth] = []
    watch = ClusterWatch(
        every=0, on_change=seen.append, read=lambda: reads.pop(0), stale=lambda: short.pop(0) if short else True
    )

    async def run() -> None:
        watch.ensure_running(wanted=lambda: bool(reads))
        await watch._task

    asyncio.run(run())
    # Unreachable, the page says so already: no page read would do better, so no re-read.
    assert seen == [down, down, unreachable]


class _AdminWhoseOffsetsNeverAnswer:
    """The metadata answers; the offsets' requests wait on a leader just killed."""

    def __init__(self, answer: ClusterMetadata) -> None:
        self.answer = answer

    def list_topics(self, timeout: float) -> ClusterMetadata:
        return self.answer

    def list_offsets(self, requests: dict, request_timeout: float) -> dict:
        return {tp: Future() for tp in requests}

    def list_consumer_groups(self, request_timeout: float) -> Future:
        return Future()


def test_a_view_whose_offsets_do_not_answer_in_time_still_shows_what_the_metadata_says():
    answer = metadata(live=[1, 2], partitions={"orders": [(1, [1, 2, 3], [1, 2]), (2, [2, 3, 1], [2, 1])]})

    view = _Reader(_AdminWhoseOffsetsNeverAnswer(answer), timeout=0.2).read()
    page = render_to_string("stats/regions/kafka.html", {"kafka": view})

    assert view.error is None
    assert view.incomplete.startswith("offsets and consumer groups not read")
    assert 'data-warning="broker-down" data-broker="3"' in page
    assert "2 under-replicated partitions" in page
    assert 'data-topic="orders" data-partition="1" data-low="" data-end="" data-leader="2"' in page
    assert 'id="kafka-incomplete"' in page
    assert "Kafka unreachable" not in page
