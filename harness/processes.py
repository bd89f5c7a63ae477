"""Project processes started for real (consumers, web, relay) against one database: a SQLite file
in their home, or the PostgreSQL database the test gives (the process_database_url fixture)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent

RESULTS = """
import json
from deliveries.selectors import deliveries_to_make
from stats.selectors import dish_sales, sales_totals
t = sales_totals()
print(json.dumps({
    "orders": t.orders, "revenue": str(t.revenue), "food_cost": str(t.food_cost),
    "dishes": {str(d.dish_id): d.quantity for d in sorted(dish_sales(), key=lambda d: d.dish_id)},
    "deliveries": sorted(str(d.order_id) for d in deliveries_to_make()),
}))
"""


class Services:
    """Consumer processes sharing one database, as `make run` starts them."""

    def __init__(
        self, home: Path, bootstrap_servers: str, database_url: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        """`env`: more settings for every process, before the first migrate."""
        self.env = {
            **os.environ,
            "FOODSITE_HOME": str(home),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
            "KAFKA_GROUP_PREFIX": settings.KAFKA_GROUP_PREFIX,
            # The broker's minimum: a killed member's partitions move on after 6 s.
            "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "PYTHONUNBUFFERED": "1",
        }
        # Without one, the SQLite file in home (settings' default), whatever this shell exports.
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = sys.executable
        self.running: list[subprocess.Popen] = []
        self.log_files: dict[int, Path] = {}
        self.manage("migrate", "--noinput")

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start(self, command: str, *args: str) -> subprocess.Popen:
        """A manage.py command (consumers get small batches, to make more of them)."""
        if command.startswith("consume_") and not args:
            args = ("--batch-size", "200")
        return self.spawn(command, [sys.executable, "manage.py", command, *args])

    def spawn_web(self, port: int | None = None) -> tuple[subprocess.Popen, str]:
        """A daphne web process and its URL (not yet answering: wait_http). On a port bound
        here (port 0: the kernel's pick) and handed to daphne as the listening socket itself
        (--fd), so that nothing can take the port between choosing and listening; `port`: on
        that one instead (a web process started again where its pages are)."""
        if port is not None:
            argv = [self.python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "foodsite.asgi:application"]
            return self.spawn("web", argv), f"http://127.0.0.1:{port}"
        with socket.socket() as listener:
            # As daphne sets on a socket of its own: the connections it accepts inherit it, and
            # without it those it left behind when killed keep a restart off the port for a minute.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(socket.SOMAXCONN)
            argv = [self.python, "-m", "daphne", "--fd", str(listener.fileno()), "foodsite.asgi:application"]
            process = self.spawn("web", argv, pass_fds=(listener.fileno(),))
            return process, f"http://127.0.0.1:{listener.getsockname()[1]}"

    def spawn(self, name: str, argv: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        """`pass_fds`: open files the process inherits (a listening socket)."""
        path = self.logs / f"{name}-{len(self.running)}.log"
        with path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: close() takes its children too (Celery's pool).
                start_new_session=True,
                pass_fds=pass_fds,
            )
        self.running.append(process)
        self.log_files[process.pid] = path
        return process

    def stop(self, process: subprocess.Popen) -> int:
        """SIGTERM once the service runs (during Django's start-up nothing handles it yet)."""
        log = self.log_files[process.pid]
        deadline = time.monotonic() + 30
        while " consuming " not in log.read_text(errors="replace") and process.poll() is None:
            assert time.monotonic() < deadline, "service never started consuming"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=30)

    def catch_up(self) -> None:
        """Stop nothing; run each service once more until it has read everything, then exit."""
        for command in ("consume_stats", "consume_deliveries"):
            self.manage(command, "--until-caught-up")

    def results(self) -> dict:
        # The last line: Django's shell may print a banner first.
        return json.loads(self.manage("shell", "-c", RESULTS).strip().splitlines()[-1])

    def close(self) -> None:
        for process in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group outlives a killed leader
            process.wait()
