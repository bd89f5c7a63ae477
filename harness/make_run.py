"""`make run` started by a test: `python -m devstack.launcher` in a fresh home, its output in
a file, its children found by what they are (for a test to kill one and check it was reaped)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.ports import free_port_block

BASE_DIR = Path(__file__).resolve().parent.parent


class MakeRun:
    """The launcher of `make run`, in `home`, on free ports (the next ones too: the cluster's
    second web process, its other Kafka nodes)."""

    def __init__(self, home: Path, profile: str = "embedded", env: dict[str, str] | None = None) -> None:
        self.home = home
        self.profile = profile
        self.log = home / "launcher.log"
        self.env = {**os.environ, "FOODSITE_HOME": str(home), "FOODSITE_PROFILE": profile, **(env or {})}
        # The launcher starts its own of each, as `make run` does.
        for own in (
            "KAFKA_BOOTSTRAP_SERVERS",
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "SCHEMA_REGISTRY_URL",
            "CONNECT_URL",
            "OUTBOX_RELAY",
            "PROMETHEUS_MULTIPROC_DIR",
        ):
            self.env.pop(own, None)
        self.pick_ports()
        self.process: subprocess.Popen | None = None

    def pick_ports(self) -> None:
        # One block for all of them: blocks picked one by one could overlap (PORT + 1 the
        # second web, KAFKA_PORT + 1 and + 2 the other nodes), as nothing binds them before
        # the launcher starts.
        first = free_port_block(9)
        self.port, self.kafka_port = first, first + 2
        self.url = f"http://127.0.0.1:{self.port}"
        self.env.update(
            PORT=str(self.port),
            KAFKA_PORT=str(self.kafka_port),
            POSTGRES_PORT=str(first + 5),
            REDIS_PORT=str(first + 6),
            SCHEMA_REGISTRY_PORT=str(first + 7),
            CONNECT_PORT=str(first + 8),
        )
        self.registry_url = f"http://127.0.0.1:{first + 7}/apis/ccompat/v7"
        self.connect_url = f"http://127.0.0.1:{first + 8}"

    def start(self, timeout: float = 180, attempts: int = 3) -> None:
        """Start it and wait for its "ready" line. The launcher never moves the ports it is
        given; those are the test's picks, free when picked: if one was taken by the time the
        launcher checked or bound it (it says "is taken by another program"), the test picks
        others and starts it again, as the local servers do with theirs (devstack.local_server)."""
        for attempt in range(1, attempts + 1):
            with self.log.open("wb") as sink:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "devstack.launcher"],
                    cwd=BASE_DIR,
                    env=self.env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self.wait_for(r"\| ready in ", timeout)
                return
            except AssertionError:
                if (
                    attempt == attempts
                    or self.process.poll() is None
                    or "is taken by another program" not in self.output()
                ):
                    raise
                print(f"the launcher found a port taken: {self.launcher_lines()[-2:]}; starting it on others")
                self.log.rename(self.log.with_name(f"launcher-{attempt}.log"))
                self.pick_ports()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def said(self, line: str) -> bool:
        """A line of the launcher's own, exactly."""
        return any(text.partition("| ")[2] == line for text in self.launcher_lines())

    def launcher_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if re.match(r"^\S+ launcher\s+\|", line)]

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.output(), re.MULTILINE)):
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the launcher's output:\n{self.output()[-6000:]}")
            time.sleep(0.2)
        return found

    def children(self) -> dict[str, int]:
        """The launcher's children by name (as its lines tag them) -> pid, zombies left out."""
        assert self.process is not None
        found = {}
        for pid, state, parent in _processes():
            if parent != self.process.pid or state == "Z":
                continue
            name = _name_of(pid)
            if name:
                found[name] = pid
        return found

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a person in the terminal; its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        """Whatever happened, nothing left running."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def state_of(pid: int) -> str | None:
    """The process's state letter ("S", "R", "Z" for a zombie), or None once it is gone (reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _processes() -> list[tuple[int, str, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            found.append((int(entry.name), fields[0], int(fields[1])))
    return found


def _name_of(pid: int) -> str:
    """What the launcher calls this child: its FOODSITE_PROCESS, or the server it runs."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        argv = [arg.decode(errors="replace") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return ""
    for variable in environ:
        if variable.startswith(b"FOODSITE_PROCESS="):
            return variable.partition(b"=")[2].decode()
    if "kafka.Kafka" in argv:
        config = Path(argv[-2] if argv[-1] == "" else argv[-1])
        node = re.fullmatch(r"node-(\d+)", config.parent.name)
        return f"kafka-{node.group(1)}" if node else "kafka"
    if argv[0].endswith("/postgres"):
        return "postgres"
    if "redis-server" in argv[0]:  # it sets its own title: "/usr/bin/redis-server 127.0.0.1:6379"
        return "redis"
    if any(arg.endswith("quarkus-run.jar") for arg in argv):
        return "schema-registry"
    if "org.apache.kafka.connect.cli.ConnectDistributed" in argv:
        return "connect"
    return ""
