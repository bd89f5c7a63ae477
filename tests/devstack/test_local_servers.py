"""The local PostgreSQL and Redis servers the cluster profile and the suite run on."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.local_server import PortTaken
from devstack.ports import free_port
from devstack.postgres_server import LocalPostgres, PostgresExited
from devstack.redis_server import LocalRedis


@pytest.fixture
def pg_home() -> Iterator[Path]:
    # Not under pytest's tmp root, which the `postgres` user may not enter (see conftest).
    home = Path(tempfile.mkdtemp(prefix="foodsite-test-pg-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_postgres_server_takes_connections_with_its_password_only(postgres_server: LocalPostgres) -> None:
    url = postgres_server.create_database("local_servers_check")
    assert postgres_server.create_database("local_servers_check") == url  # a second call finds it
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (n int)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] >= 1
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"  # the tests' server is not durable
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(f":{postgres_server.password}@", ":wrong@"))


def test_postgres_keeps_its_data_across_a_restart(pg_home: Path) -> None:
    server = LocalPostgres(pg_home)
    with server:
        with psycopg.connect(server.create_database("kept")) as conn:
            conn.execute("CREATE TABLE orders (id int)")
            conn.execute("INSERT INTO orders VALUES (42)")
        assert (pg_home / "postgres.log").exists()
    assert server.process is not None
    assert server.process.returncode == 0  # a fast shutdown, not a kill
    server.port = free_port()  # a new port on the same data is fine
    with server, psycopg.connect(server.url("kept")) as conn:
        assert conn.execute("SELECT id FROM orders").fetchall() == [(42,)]
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"


def test_postgres_says_why_it_did_not_start(postgres_server: LocalPostgres, pg_home: Path) -> None:
    # The session server's port, named: this one must fail fast, naming it.
    clash = LocalPostgres(pg_home, port=postgres_server.port, durable=False, port_setting="POSTGRES_PORT")
    clash.start()
    try:
        with pytest.raises(PortTaken, match=rf"port {postgres_server.port} \(POSTGRES_PORT\) is taken"):
            clash.wait_ready(timeout=60)
    finally:
        clash.stop()
    assert "Address already in use" in clash.log_file.read_text()  # its own reason, in its log


def test_postgres_that_cannot_start_says_why(pg_home: Path) -> None:
    server = LocalPostgres(pg_home, durable=False)
    server.ensure_initialized()
    (server.data_dir / "postgresql.conf").write_text("shared_buffers = 'plenty'\n")
    server.start()
    try:
        with pytest.raises(PostgresExited, match=r"invalid value for parameter \"shared_buffers\""):
            server.wait_ready(timeout=60)
    finally:
        server.stop()


@pytest.mark.db_write
@pytest.mark.django_db
def test_the_tests_run_on_the_database_asked_for(request: pytest.FixtureRequest) -> None:
    from django.db import connection

    expected = {"sqlite": "sqlite", "postgres": "postgresql"}[request.config.getoption("--db")]
    assert connection.vendor == expected
    with connection.cursor() as cursor:  # a real round trip, not only the backend's name
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_redis_server_answers_on_localhost_without_persistence(redis_server: LocalRedis) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as conn:
        conn.sendall(b"SET foodsite-check 1\r\nCONFIG GET save\r\nCONFIG GET appendonly\r\n")
        reply = b""
        while reply.count(b"\r\n") < 10:
            reply += conn.recv(4096)
    assert reply.startswith(b"+OK\r\n")
    assert b"$4\r\nsave\r\n$0\r\n\r\n" in reply
    assert b"$10\r\nappendonly\r\n$2\r\nno\r\n" in reply
