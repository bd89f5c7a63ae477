"""The SQLite backend's BEGIN (foodsite/sqlite/base.py): it waits for another process's write
lock by trying again itself, and still gives up after the configured timeout."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connections

from foodsite.sqlite.base import DatabaseWrapper


def sqlite_connection(path: Path, timeout: float) -> DatabaseWrapper:
    """A connection to `path` with the settings' OPTIONS but this timeout."""
    settings_dict = {
        **connections["default"].settings_dict,
        "ENGINE": "foodsite.sqlite",
        "NAME": str(path),
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": timeout},
    }
    return DatabaseWrapper(settings_dict, alias=f"sqlite-{timeout}-{id(path)}")


def begin(connection: DatabaseWrapper) -> None:
    connection.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def commit(connection: DatabaseWrapper) -> None:
    connection.commit()
    connection.set_autocommit(True)


@pytest.fixture
def database(tmp_path: Path, django_db_blocker) -> Iterator[Path]:
    """A SQLite file of its own (not the test database): connections to it are ours to open."""
    path = tmp_path / "shared.sqlite3"
    with django_db_blocker.unblock():
        setup = sqlite_connection(path, 5)
        with setup.cursor() as cursor:
            cursor.execute("CREATE TABLE writes (who TEXT)")
        setup.close()
        yield path


def test_a_writer_waits_for_the_lock_and_gets_it_when_the_holder_commits(database: Path):
    holder = sqlite_connection(database, 20)
    begin(holder)
    with holder.cursor() as cursor:
        cursor.execute("INSERT INTO writes VALUES ('holder')")
    order: list[str] = []
    failures: list[BaseException] = []

    def write() -> None:  # another connection, in its thread (Django's rule), as another process's
        waiter = sqlite_connection(database, 20)
        try:
            begin(waiter)  # blocks: the holder has the write lock
            order.append("waiter began")
            with waiter.cursor() as cursor:
                cursor.execute("INSERT INTO writes VALUES ('waiter')")
            commit(waiter)
        except BaseException as exc:
            failures.append(exc)
        finally:
            waiter.close()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive(), "began while another connection held the write lock"
    order.append("holder committed")
    commit(holder)
    thread.join(10)
    assert not thread.is_alive()
    assert failures == []
    assert order == ["holder committed", "waiter began"]
    with holder.cursor() as cursor:
        cursor.execute("SELECT who FROM writes ORDER BY rowid")
        assert [row[0] for row in cursor.fetchall()] == ["holder", "waiter"]
        # SQLite's own wait is back for every other statement.
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 20000
    holder.close()


def test_a_writer_gives_up_after_its_timeout_as_sqlite_would(database: Path):
    holder, waiter = sqlite_connection(database, 20), sqlite_connection(database, 0.3)
    begin(holder)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            begin(waiter)
        with waiter.cursor() as cursor:  # not left half-way: its handler is back, no transaction open
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == 300
        assert not waiter.connection.in_transaction
    finally:
        commit(holder)
        holder.close()
        waiter.close()
