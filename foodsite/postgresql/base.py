"""PostgreSQL (Django's backend), checking a kept connection's health without a round trip.

With CONN_HEALTH_CHECKS on, Django asks the server `SELECT 1` before each request's first
query on a connection it kept (CONN_MAX_AGE): a round trip per request, for a connection that
is nearly always fine, and the order's own write is one (orders.services). Here the check
first looks at what the connection already knows: libpq's status, and whether the server
sent anything while the connection was idle. A server that ends a session (a restart, an
administrator's pg_terminate_backend, a crash) sends its error and closes the socket, so
the socket is readable; a healthy idle connection has nothing to read. Only then is
Django's own check run (`SELECT 1`, which also copes with a notice the server may send).
Neither check sees a peer that vanished without a word (the network cut): Django's `SELECT 1`
would wait for it like any query.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        if not self._quiet_and_ok() and not self.is_usable():
            self.close()
        self.health_check_done = True

    def _quiet_and_ok(self) -> bool:
        """libpq holds the connection as open and idle, and the server sent nothing since."""
        pgconn = self.connection.pgconn
        if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        poller = select.poll()  # not select(): a web process may hold more than 1024 sockets
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
