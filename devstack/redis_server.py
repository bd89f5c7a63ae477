"""A real Redis server on this machine, from Debian's `redis-server` package (no Docker).

Celery's broker in the cluster profile, on 127.0.0.1 only, without a config file. No
persistence (no RDB snapshots, no append-only file): what Redis holds for Celery is only a
trigger. The facts live in the database: a notification not yet sent is queued again by beat's
sweep (notifications.tasks.send_unsent), the outbox relay runs again on beat's next tick. So a
Redis restart that loses its queues delays an email or a relay pass; it loses nothing.
No Django here: it must run before settings exist.

    python -m devstack.redis_server --home .local/redis --port 6379   # foreground
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from devstack.local_server import LocalServer, ServerExited

BASE_DIR = Path(__file__).resolve().parent.parent
INSTALL_HINT = "install Debian's redis-server package (`make system-deps` does: apt-get install redis-server)"


class RedisExited(ServerExited):
    """The server ended before it answered (a TimeoutError too: it will never be ready)."""


class LocalRedis(LocalServer):
    label = "Redis"
    log_name = "redis.log"
    exited = RedisExited

    def __init__(self, home: Path, port: int | None = None, *, port_setting: str | None = None) -> None:
        """`port`: None picks a free one (moved if taken, see devstack.local_server); a given one
        stays, and `port_setting` names where it came from (REDIS_PORT) for the error if taken."""
        super().__init__(home, port, port_setting=port_setting)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise FileNotFoundError(f"no redis-server: {INSTALL_HINT}")
        return [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.home),
            "--save", "",  # no snapshots (see the module's docstring)
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",  # stdout: our log file
        ]  # fmt: skip

    def _spawn(self, stdout: Any, popen: dict[str, Any]) -> subprocess.Popen:
        command = self.command()
        self.home.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)

    def ping(self, timeout: float = 1) -> bool:
        """True if the server answers PING (raw protocol: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _answers(self) -> bool:
        return self.ping()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Redis server in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "redis")
    parser.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    args = parser.parse_args(argv)
    server = LocalRedis(args.home, port=args.port)
    try:
        command = server.command()
    except FileNotFoundError as exc:
        print(f"localredis: {exc}", file=sys.stderr)
        return 1
    server.home.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # become redis-server: same pid, signals reach it directly
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
