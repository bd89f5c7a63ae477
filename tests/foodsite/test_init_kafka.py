import uuid
from io import StringIO

import pytest
from confluent_kafka.admin import ConfigResource
from django.core.management import call_command

from foodsite.kafka.topics import admin_client, topic_name

EXPECTED = [
    "orders",
    "payments",
    "delivery-status",
    "orders.dlq",
    "payments.dlq",
    "delivery-status.dlq",
    # Each service's own re-drive topic (deadletters.services); the dead-letter recorder has none.
    "deliveries.redrive",
    "notifications.redrive",
    "recommendations.redrive",
    "stats.redrive",
]


@pytest.fixture
def bare_kafka(kafka, settings):
    """The session broker under a prefix of its own, with none of the topics created yet."""
    settings.KAFKA_TOPIC_PREFIX = f"bare-{uuid.uuid4().hex[:10]}-"
    yield kafka
    admin_client().delete_topics([topic_name(t) for t in [*EXPECTED, "live-updates"]])


def test_init_kafka_creates_every_topic_with_retention_and_is_idempotent(bare_kafka, settings):
    first, second = StringIO(), StringIO()

    call_command("init_kafka", stdout=first)
    call_command("init_kafka", stdout=second)

    admin = admin_client()
    topics = admin.list_topics(timeout=10).topics
    for logical in EXPECTED:
        name = topic_name(logical)
        assert len(topics[name].partitions) == settings.KAFKA_PARTITIONS
        config = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name)])
        values = next(iter(config.values())).result()
        assert values["retention.ms"].value == str(settings.KAFKA_RETENTION_MS)
        assert values["retention.bytes"].value == str(settings.KAFKA_RETENTION_BYTES)
    live = topic_name("live-updates")
    assert len(topics[live].partitions) == 1
    config = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, live)])
    assert next(iter(config.values())).result()["retention.ms"].value == str(settings.LIVE_UPDATES_RETENTION_MS)
    assert first.getvalue().count("created") == len(EXPECTED) + 1
    assert second.getvalue().count("exists") == len(EXPECTED) + 1
    assert "created" not in second.getvalue()
