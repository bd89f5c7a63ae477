"""Fixtures: one real Kafka broker for the whole session, fresh topics for each test; a real
PostgreSQL server and a real Redis server for the session, started when a test first asks.

Set TEST_KAFKA_BOOTSTRAP_SERVERS to use a broker you already run instead of starting one.
`pytest --db postgres` (or TEST_DATABASE=postgres) runs the tests on PostgreSQL instead of SQLite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from foodsite.kafka.producer import reset_publisher
from foodsite.kafka.topics import admin_client, declared_topics, ensure_topics
from foodsite.localkafka import LocalKafka, free_port
from foodsite.localpostgres import LocalPostgres
from foodsite.localredis import LocalRedis
from tests.kafka_support import KafkaTestBed


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One PostgreSQL server for the session (fsync off: throwaway data), on a free port."""
    # Not under pytest's tmp root: that is 0700, and as root the server runs as the `postgres`
    # user, who could not enter it.
    home = Path(tempfile.mkdtemp(prefix="foodsite-test-postgres-"))
    server = LocalPostgres(home, port=free_port(), durable=False)
    try:
        server.start()
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """One Redis server for the session, on a free port."""
    server = LocalRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    try:
        server.start()
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port())
    broker.start()
    try:
        broker.wait_ready(timeout=120)
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str, settings: pytest.FixtureRequest) -> Iterator[KafkaTestBed]:
    """Topics and consumer groups of this test only (a unique prefix), on the session broker."""
    prefix = f"test-{uuid.uuid4().hex[:10]}-"
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_bootstrap
    settings.KAFKA_TOPIC_PREFIX = prefix
    settings.KAFKA_GROUP_PREFIX = prefix
    reset_publisher()
    specs = declared_topics()
    ensure_topics(admin_client(), specs)
    yield KafkaTestBed(kafka_bootstrap)
    reset_publisher()
    # Keep the broker light for the rest of the session.
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([s.name for s in specs])
