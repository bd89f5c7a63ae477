"""foodsite.postgresql: a kept connection's health is checked without asking the server (the
order's round trip is then its only one: tests/orders/test_order_write.py), and a connection
the server ended is still found out and replaced before a request's first query."""

from __future__ import annotations

import select

import psycopg
import pytest
from django.db import close_old_connections, connection

from orders.models import Dish

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_kept_connection_the_server_ended_is_replaced_before_the_next_request_queries():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's backend")
    ended = backend_pid()
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"], autocommit=True
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [ended])  # a restart, an administrator, a crash
    poller = select.poll()
    poller.register(connection.connection.pgconn.socket, select.POLLIN)
    assert poller.poll(10_000), "the server never said it ended the session"

    close_old_connections()  # a request starts
    assert Dish.objects.count() == 0  # its first query, on a connection that works

    assert backend_pid() != ended
