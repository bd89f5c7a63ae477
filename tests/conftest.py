"""Fixtures: one real Kafka broker for the whole session, fresh topics for each test; a real
PostgreSQL server and a real Redis server for the session, started when a test first asks; a
three-node cluster too, started only if a test asks for it (`kafka_cluster`).

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
from foodsite.localcluster import LocalCluster
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


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three KRaft nodes (RF 3, min ISR 2), once per session, for the tests that ask for it.

    A test may kill, stop and restart nodes; it must leave all three running and registered
    (cluster.start_node + cluster.wait_node_ready) for the next one."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        cluster.wait_ready(timeout=180)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str, settings: pytest.FixtureRequest) -> Iterator[KafkaTestBed]:
    """Topics and consumer groups of this test only (a unique prefix), on the session broker."""
    yield from _own_topics(kafka_bootstrap, settings)


@pytest.fixture
def kafka_on_cluster(kafka_cluster: LocalCluster, settings: pytest.FixtureRequest) -> Iterator[KafkaTestBed]:
    """Topics and consumer groups of this test only, on the session cluster, 3 replicas each."""
    settings.KAFKA_REPLICATION_FACTOR = 3
    yield from _own_topics(kafka_cluster.bootstrap_servers, settings)


def _own_topics(bootstrap: str, settings: pytest.FixtureRequest) -> Iterator[KafkaTestBed]:
    prefix = f"test-{uuid.uuid4().hex[:10]}-"
    settings.KAFKA_BOOTSTRAP_SERVERS = bootstrap
    settings.KAFKA_TOPIC_PREFIX = prefix
    settings.KAFKA_GROUP_PREFIX = prefix
    reset_publisher()
    specs = declared_topics()
    ensure_topics(admin_client(), specs)
    yield KafkaTestBed(bootstrap)
    reset_publisher()
    # Keep the broker light for the rest of the session.
    AdminClient({"bootstrap.servers": bootstrap}).delete_topics([s.name for s in specs])
