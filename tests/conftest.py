"""Fixtures: one real Kafka broker for the whole session, fresh topics for each test; a real
three-node cluster (`kafka_cluster`), a real PostgreSQL server and a real Redis server for the
session, each started when a test first asks.

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

import dj_database_url
import hypothesis
import pytest
from confluent_kafka.admin import AdminClient
from django.conf import settings as django_settings
from django.db import connections

from devstack.kafka_cluster import LocalCluster
from devstack.kafka_node import LocalKafka
from devstack.postgres_server import LocalPostgres
from devstack.redis_server import LocalRedis
from eventing.producer import reset_publisher
from eventing.topics import admin_client, declared_topics, ensure_topics
from harness.kafka_support import KafkaTestBed

DATABASES = ("sqlite", "postgres")

# The fuzz tests: the same examples in every run (a fixed seed, no example database), few
# enough that the suite keeps its time; HYPOTHESIS_PROFILE=deep for a longer hunt by hand.
# Examples found are kept in the tests as @example, so they run first every time.
hypothesis.settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,  # a real broker and database answer in their own time
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.function_scoped_fixture],
)
hypothesis.settings.register_profile(
    "deep", parent=hypothesis.settings.get_profile("ci"), derandomize=False, max_examples=2000
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=DATABASES,
        default=os.environ.get("TEST_DATABASE", "sqlite"),
        help="the database the tests run on (default: TEST_DATABASE or sqlite); "
        "`make test` runs the db_write tests again with --db postgres",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of the three-broker cluster runs `alone` (one cluster for all of them, in one
    session, and three JVMs are as much as the 2 cores take beside a test)."""
    for item in items:
        if {"kafka_cluster", "kafka_on_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.alone)


def on_postgres(config: pytest.Config) -> bool:
    return config.getoption("--db") == "postgres"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """pytest-django's hook before it creates the test database: with --db postgres, point the
    default database at the session's PostgreSQL server (pytest-django then creates test_foodsite).

    On SQLite, the test database is a file, as in production, not Django's in-memory default:
    its shared cache fails a second writer at once ("database table is locked") instead of
    letting it wait, so tests racing requests or consumers in threads could not run on it."""
    default = django_settings.DATABASES["default"]
    if not on_postgres(request.config):
        if default["ENGINE"] == "foodsite.sqlite":
            default.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")
        return
    server: LocalPostgres = request.getfixturevalue("postgres_server")
    parsed = dj_database_url.parse(server.url("foodsite"))
    # In place: Django's connection handler holds this very dict. OPTIONS are SQLite's (WAL,
    # IMMEDIATE transactions), meaningless to PostgreSQL.
    default.update({key: parsed[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")})
    default["ENGINE"] = "foodsite.postgresql"  # as settings.py makes of a postgres:// DATABASE_URL
    default["OPTIONS"] = {}
    connections["default"].close()
    del connections["default"]  # the next use builds a PostgreSQL connection from the new settings


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-django's, plus: on PostgreSQL, end the sessions still open on the test database
    (producer poll threads' connections) so that pytest-django can drop it at the end."""
    yield
    if on_postgres(request.config):
        server: LocalPostgres = request.getfixturevalue("postgres_server")
        with server.connect(autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [django_settings.DATABASES["default"]["NAME"]],
            )


@pytest.fixture
def process_database_url(request: pytest.FixtureRequest) -> str | None:
    """The DATABASE_URL for project processes a test starts (harness.processes.Services): None on
    SQLite (they share a file in their home), a fresh database of the session server on PostgreSQL."""
    if not on_postgres(request.config):
        return None
    server: LocalPostgres = request.getfixturevalue("postgres_server")
    return server.create_database(f"processes_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One PostgreSQL server for the session (fsync off: throwaway data), on a free port."""
    # Not under pytest's tmp root: that is 0700, and as root the server runs as the `postgres`
    # user, who could not enter it.
    home = Path(tempfile.mkdtemp(prefix="foodsite-test-postgres-"))
    server = LocalPostgres(home, durable=False)
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
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's own broker, started when first asked: the one `kafka` uses, unless
    TEST_KAFKA_BOOTSTRAP_SERVERS names another."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        broker.wait_ready(timeout=120)
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    return os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS") or request.getfixturevalue("kafka_node").bootstrap_servers


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three KRaft nodes (RF 3, min ISR 2), once per session, for the tests that ask for it.

    A test may kill, stop and restart nodes; it must leave all three running and registered
    (cluster.start_node + cluster.wait_node_ready) for the next one."""
    # Below the web processes in CPU priority: on a real deployment brokers have machines of
    # their own; here three JVMs share 2 cores with the daphne processes whose answer times the
    # failover tests bound, and a broker's start-up would otherwise starve them.
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), nice=10)
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
def kafka_on_node(kafka_node: LocalKafka, settings: pytest.FixtureRequest) -> Iterator[KafkaTestBed]:
    """As `kafka`, always on the session's own broker, which the test may freeze for a moment
    (KafkaTestBed.frozen): a broker that holds every request unanswered, then goes on."""
    yield from _own_topics(kafka_node.bootstrap_servers, settings, node=kafka_node)


@pytest.fixture
def kafka_on_cluster(kafka_cluster: LocalCluster, settings: pytest.FixtureRequest) -> Iterator[KafkaTestBed]:
    """Topics and consumer groups of this test only, on the session cluster, 3 replicas each."""
    settings.KAFKA_REPLICATION_FACTOR = 3
    yield from _own_topics(kafka_cluster.bootstrap_servers, settings)


def _own_topics(
    bootstrap: str, settings: pytest.FixtureRequest, node: LocalKafka | None = None
) -> Iterator[KafkaTestBed]:
    prefix = f"test-{uuid.uuid4().hex[:10]}-"
    settings.KAFKA_BOOTSTRAP_SERVERS = bootstrap
    settings.KAFKA_TOPIC_PREFIX = prefix
    settings.KAFKA_GROUP_PREFIX = prefix
    reset_publisher()
    specs = declared_topics()
    ensure_topics(admin_client(), specs)
    yield KafkaTestBed(bootstrap, node)
    reset_publisher()
    # Keep the broker light for the rest of the session.
    AdminClient({"bootstrap.servers": bootstrap}).delete_topics([s.name for s in specs])
