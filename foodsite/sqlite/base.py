"""SQLite (Django's backend), handing its write lock over promptly between the processes
that share the file.

In the embedded default every process writes the one SQLite file: the web, four consumers,
the worker. Transactions are IMMEDIATE (settings), so each takes the write lock at BEGIN.
When another holds it, SQLite's own busy handler sleeps and tries again after 1, 2, 5, 10, 15,
20, 25... ms: a writer that comes while another commits waits several times longer than the
lock is held. In the run command's stack at one order a second (bench/live_latency.py), the
consumers' BEGIN took 0.2 ms at the median but 11-20 ms at p95 (max 35), for transactions
that held the lock 2-5 ms; a payment is written by all four consumers at once.

Here BEGIN tries again every 0.25 ms, doubling up to 2 ms, until the same timeout
(OPTIONS["timeout"]), then fails as SQLite would ("database is locked"). Every other
statement keeps SQLite's own handler (only a write outside a transaction ever waits there).
Measured the same way, two runs each alternated with Django's backend: the deliveries
consumer's BEGIN p95 10.3 and 10.6 -> 9.3 and 6.7 ms, max 34.7 and 33.9 -> 18.9 and 17.6 ms;
the stats consumer's p95 26.0 and 20.0 -> 15.6 and 11.9 ms, max 57 and 54 -> 22 and 27 ms.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from django.db.backends.sqlite3 import base

FIRST_PAUSE_S = 0.00025
LONGEST_PAUSE_S = 0.002


class DatabaseWrapper(base.DatabaseWrapper):
    busy_timeout_ms = 5000  # sqlite3.connect's default timeout; OPTIONS["timeout"] sets it

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        connection = super().get_new_connection(conn_params)
        self.busy_timeout_ms = int(conn_params.get("timeout", 5) * 1000)
        return connection

    def _start_transaction_under_autocommit(self) -> None:
        begin = f"BEGIN {self.transaction_mode}" if self.transaction_mode else "BEGIN"
        raw = self.connection
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = FIRST_PAUSE_S
        with self.wrap_database_errors:  # as Django's own errors: callers retry on OperationalError
            raw.execute("PRAGMA busy_timeout = 0")  # SQLite's handler off: BUSY comes back at once
            try:
                while True:
                    try:
                        raw.execute(begin)
                        return
                    except sqlite3.OperationalError as exc:
                        if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                            raise
                    time.sleep(pause)
                    pause = min(pause * 2, LONGEST_PAUSE_S)
            finally:
                raw.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
