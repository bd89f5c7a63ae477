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
import time
from pathlib import Path
from typing import IO, Any

BASE_DIR = Path(__file__).resolve().parent.parent
INSTALL_HINT = "install Debian's redis-server package (`make system-deps` does: apt-get install redis-server)"


class RedisExited(TimeoutError, RuntimeError):
    """The server ended before it answered (a TimeoutError too: it will never be ready)."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalRedis:
    def __init__(self, home: Path, port: int = 6379) -> None:
        self.home = Path(home).resolve()
        self.port = port
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        """Where start() sends the server's output when the caller does not take it."""
        return self.home / "redis.log"

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

    def start(self, stdout: Any = None, stderr: Any = None, **popen: Any) -> subprocess.Popen:
        """Start the server in the background and return its process (not yet ready: wait_ready).

        Output goes to home/redis.log unless `stdout` says otherwise; `popen` goes to Popen as is."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"Redis is already running (pid {self.process.pid})")
        command = self.command()
        self.home.mkdir(parents=True, exist_ok=True)
        if stdout is None:
            self._log = self.log_file.open("ab")
            stdout = self._log
            stderr = subprocess.STDOUT if stderr is None else stderr
        self.process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, **popen)
        return self.process

    def ping(self, timeout: float = 1) -> bool:
        """True if the server answers PING (raw protocol: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        """Return once the server answers PING; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process is not None and self.process.poll() is not None:
                raise RedisExited(f"Redis exited with {self.process.returncode} before it was ready{self._log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis on {self.url} did not answer within {timeout:g} s{self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        if self._log is None:
            return " (its output went to the caller)"
        self._log.flush()
        return f"; the end of {self.log_file}:\n{_tail(self.log_file)}"

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (nothing to save: it exits at once), then SIGKILL after `timeout` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalRedis:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
