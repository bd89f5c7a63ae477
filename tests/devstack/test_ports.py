"""Ports of the local servers: a server whose port is taken by the time it binds starts on
another one and says which, unless the port was named by the user, which stays: then a clear
error names it. The real servers, each port taken by a listening socket of the test's own."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from devstack import ports
from devstack.kafka_cluster import LocalCluster
from devstack.kafka_node import LocalKafka
from devstack.local_server import PortTaken
from devstack.ports import bindable, ephemeral_range, free_port, held, port_taken_in, reserve
from devstack.postgres_server import LocalPostgres
from devstack.redis_server import LocalRedis


@contextmanager
def taken(*ports: int) -> Iterator[None]:
    """Another program listening on each of `ports` (as a server would)."""
    sockets = []
    try:
        for port in ports:
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def pg_home() -> Iterator[Path]:
    # Not under pytest's tmp root, which the `postgres` user may not enter (see conftest).
    home = Path(tempfile.mkdtemp(prefix="foodsite-test-pg-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_free_ports_are_outside_the_range_outgoing_connections_take_theirs_from():
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(not low <= port <= high for port in ports), ports
    assert all(port >= 10_000 for port in ports), ports
    assert len(set(ports)) > 40  # random, not one port handed out again and again


def test_a_port_used_by_an_outgoing_connection_counts_as_held():
    # What made a free port fail: the local end of a connection cannot be listened on.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            local_port = client.getsockname()[1]
            assert held(local_port)
            assert not bindable(local_port)


def test_the_taken_port_is_read_from_what_each_server_says():
    kafka = "KafkaException: Socket server failed to bind to 127.0.0.1:23456: Address already in use."
    assert port_taken_in(kafka, [23456, 23457]) == {23456}
    assert port_taken_in(kafka, [23457, 23458]) == set()  # another node's port
    redis = "# Warning: Could not create server TCP listening socket 127.0.0.1:24000: bind: Address already in use"
    assert port_taken_in(redis, [24000]) == {24000}
    postgres = 'LOG:  could not bind IPv4 address "127.0.0.1": Address already in use'
    assert port_taken_in(postgres, [25000]) == {25000}  # one port: that one
    assert port_taken_in("started\nready", [25000]) == set()


def test_redis_whose_port_was_taken_starts_on_another_and_says_which(tmp_path):
    server = LocalRedis(tmp_path / "redis")
    first = server.port
    with taken(first):
        server.start()
        try:
            server.wait_ready(timeout=30)
            assert server.port != first
            assert server.ping()
        finally:
            server.stop()
    log = server.log_file.read_text()
    assert f"port {first} was taken; starting again on port {server.port}" in log


def test_a_redis_port_the_user_named_is_not_moved(tmp_path):
    port = free_port()
    server = LocalRedis(tmp_path / "redis", port=port, port_setting="REDIS_PORT")
    with taken(port):
        server.start()
        try:
            with pytest.raises(PortTaken, match=rf"port {port} \(REDIS_PORT\) is taken.*set REDIS_PORT to a free port"):
                server.wait_ready(timeout=30)
        finally:
            server.stop()
    assert server.port == port


def test_postgres_whose_port_was_taken_starts_on_another_and_says_which(pg_home):
    server = LocalPostgres(pg_home, durable=False)
    first = server.port
    with taken(first):
        server.start()
        try:
            server.wait_ready(timeout=60)
            assert server.port != first
            with psycopg.connect(server.create_database("moved"), connect_timeout=5) as conn:
                assert conn.execute("SHOW port").fetchone()[0] == str(server.port)
        finally:
            server.stop()
    assert f"port {first} was taken; starting again on port {server.port}" in server.log_file.read_text()


def test_a_kafka_broker_whose_ports_were_taken_starts_on_others_and_says_which(tmp_path):
    broker = LocalKafka(tmp_path / "kafka")
    first_port, first_controller = broker.port, broker.controller_port
    # Both: the broker finds one taken, starts again, then finds the other.
    with taken(first_port, first_controller):
        broker.start()
        try:
            broker.wait_ready(timeout=120)
            assert {broker.port, broker.controller_port}.isdisjoint({first_port, first_controller})
        finally:
            broker.stop()
    log = broker.log_file.read_text()
    assert f"port {first_port} was taken: the broker listens on {broker.port}" in log
    assert f"port {first_controller} was taken: the controller listens on {broker.controller_port}" in log


def test_a_cluster_whose_controller_port_was_taken_starts_again_with_another(tmp_path):
    # One node (the cluster's code, with its quorum, for the price of one JVM).
    cluster = LocalCluster(tmp_path / "cluster", size=1)
    [node] = cluster.nodes
    first_controller = node.controller_port
    with taken(first_controller):
        cluster.start()
        try:
            cluster.wait_ready(timeout=120)
            assert node.controller_port != first_controller
            assert node.voters == {1: node.controller_port}
            assert cluster.live_brokers() == {1}
        finally:
            cluster.stop()
    assert (
        f"node 1: port {first_controller} was taken: its controller listens on {node.controller_port}; "
        "the cluster starts again" in node.log_file.read_text()
    )


def test_a_cluster_port_the_user_named_is_not_moved(tmp_path):
    port = free_port()
    cluster = LocalCluster(tmp_path / "cluster", ports=[port], size=1, port_setting="KAFKA_PORT")
    with taken(port):
        cluster.start()
        try:
            with pytest.raises(PortTaken, match=rf"port {port} \(KAFKA_PORT\) is taken"):
                cluster.wait_ready(timeout=120)
        finally:
            cluster.stop()


def test_a_port_reserved_for_later_is_never_picked_though_nothing_holds_it(monkeypatch):
    # The launcher reserves PORT before it starts Kafka, whose controller takes a free port:
    # without the reservation, that pick could be the web's port (CI saw it once).
    first = free_port()
    while not (bindable(first + 1) and bindable(first + 2)):
        first = free_port()
    monkeypatch.setattr(ports, "_pickable", lambda: [range(first, first + 3)])
    monkeypatch.setattr(ports, "_reserved", set())
    reserve([first, first + 1])
    assert {free_port() for _ in range(30)} == {first + 2}
