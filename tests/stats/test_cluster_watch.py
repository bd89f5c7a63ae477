"""The cluster's health and its watch, as pure logic: what a metadata answer says, and that
the watch hands on each change once (the browser test on the cluster shows it end to end)."""

from __future__ import annotations

import asyncio

from confluent_kafka.admin import BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicMetadata

from eventing.kafka_view import ClusterHealth, health_of
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
