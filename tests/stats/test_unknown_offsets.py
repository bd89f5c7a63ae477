"""A partition whose offsets are unknown for a moment (offline: no leader; or its leader being
elected on the cluster) shows as unknown on the staff page and in /metrics, not as an error."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from eventing.kafka_view import Broker, GroupOffsets, GroupPartition, KafkaView, PartitionOffsets, TopicOffsets
from observability.metrics import kafka_families


class _Families:
    def __init__(self, view: KafkaView) -> None:
        self.view = view

    def collect(self):
        yield from kafka_families(self.view)


def view_with_unknown_offsets() -> KafkaView:
    partitions = [
        PartitionOffsets(0, 3, 10, leader=1, replicas=(1, 2, 3), isr=(1, 2, 3)),
        PartitionOffsets(1, None, None, leader=-1, replicas=(1, 2, 3), isr=()),  # offline
        PartitionOffsets(2, None, None, leader=2, replicas=(1, 2, 3), isr=(2, 3)),  # leader moving
    ]
    rows = [
        GroupPartition("orders", 0, low=3, end=10, committed=8, stored=9, owner="stats-1"),
        GroupPartition("orders", 1, low=None, end=None, committed=4, stored=5, owner="stats-1"),
        GroupPartition("orders", 2, low=None, end=None, committed=None, stored=None, owner=None),
        # The end answered, the earliest did not (two requests): nothing committed, so unknown.
        GroupPartition("payments", 0, low=None, end=7, committed=None, stored=None, owner=None),
    ]
    brokers = [Broker(1, "127.0.0.1:9092", True, 3), Broker(2, "127.0.0.1:9093", True, 3), Broker(3, "", False, 3)]
    return KafkaView([TopicOffsets("orders", partitions)], [GroupOffsets("stats", "Stable", [], rows)], brokers=brokers)


def test_the_page_counts_the_known_partitions_and_leaves_the_others_unknown():
    [topic] = view_with_unknown_offsets().topics

    assert (topic.end, topic.retained) == (10, 7)
    assert [p.lag for p in view_with_unknown_offsets().groups[0].partitions] == [2, None, None, None]


def test_metrics_give_the_known_partitions_and_no_sample_for_the_others():
    registry = CollectorRegistry()
    registry.register(_Families(view_with_unknown_offsets()))

    text = generate_latest(registry).decode()

    assert 'foodsite_kafka_partition_end_offset{partition="0",topic="orders"} 10.0' in text
    assert 'foodsite_kafka_partition_end_offset{partition="1"' not in text
    assert 'foodsite_consumer_lag{group="stats",partition="0",topic="orders"} 1.0' in text  # 10 - 9 stored
    assert 'foodsite_consumer_lag{group="stats",partition="1"' not in text
    assert 'foodsite_consumer_position{group="stats",partition="1",topic="orders"} 5.0' in text


def test_metrics_give_the_clusters_health_as_the_staff_page_warns_of_it():
    registry = CollectorRegistry()
    registry.register(_Families(view_with_unknown_offsets()))

    text = generate_latest(registry).decode()

    assert 'foodsite_kafka_brokers{state="live"} 2.0' in text
    assert 'foodsite_kafka_brokers{state="down"} 1.0' in text
    assert "foodsite_kafka_under_replicated_partitions 1.0" in text  # orders[2]; the offline one counts apart
    assert "foodsite_kafka_offline_partitions 1.0" in text
