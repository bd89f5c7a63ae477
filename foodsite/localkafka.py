"""A real Apache Kafka broker on this machine, from the jars `make` fetched from Maven Central.

One KRaft node (broker and controller in one process, no ZooKeeper), on 127.0.0.1. Used by
`make run` (through foodsite.launcher) and by the test suite's session fixture. No Django
here: it must run before settings or a database exist.

    python -m foodsite.localkafka --home .local/kafka/data --port 9092   # foreground
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_LIBS = BASE_DIR / ".local" / "kafka" / "libs"
LOG_CONFIG = BASE_DIR / "kafka" / "log4j2.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalKafka:
    def __init__(
        self,
        home: Path,
        port: int = 9092,
        controller_port: int | None = None,
        libs: Path = DEFAULT_LIBS,
        java: str = "java",
    ) -> None:
        self.home = Path(home)
        self.port = port
        self.controller_port = controller_port or free_port()
        self.libs = Path(libs)
        self.java = java
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _config_file(self) -> Path:
        return self.home / "server.properties"

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        if not any(self.libs.glob("kafka_*.jar")):
            raise FileNotFoundError(f"no Kafka jars in {self.libs}: run `make setup` to fetch them from Maven Central")
        return [
            self.java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def ensure_formatted(self) -> None:
        """Write the config (ports may change between runs) and format the storage once;
        the data and its cluster id are kept, so a second run finds its topics again."""
        self.home.mkdir(parents=True, exist_ok=True)
        data = self.home / "logs"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            # Topics are created on purpose by init_kafka, with their retention, never by accident.
            "auto.create.topics.enable": "false",
            "num.partitions": "3",
            # One node: internal topics cannot have more replicas; few partitions start faster.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Nobody to wait for: let a consumer group start at once.
            "group.initial.rebalance.delay.ms": "0",
        }
        self._config_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        if (data / "meta.properties").exists():
            return
        cluster_id = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self._config_file)),
            capture_output=True,
            text=True,
            check=True,
        )

    def start(self, **popen: Any) -> subprocess.Popen:
        """Start the broker in the background; `popen` goes to subprocess.Popen (stdout, ...)."""
        self.ensure_formatted()
        if "stdout" not in popen:
            popen["stdout"] = (self.home / "kafka.log").open("ab")
            popen["stderr"] = subprocess.STDOUT
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(self._config_file), heap="512m"), **popen)
        return self.process

    def wait_ready(self, timeout: float = 60) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self.process.returncode}; see its log in {self.home}")
            try:
                if admin.list_topics(timeout=1).brokers:
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka on {self.bootstrap_servers} did not answer within {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # a controlled shutdown: the broker closes its logs cleanly
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalKafka:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a local single-node Kafka broker in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "kafka" / "data")
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    args = parser.parse_args()
    broker = LocalKafka(args.home, port=args.port)
    process = broker.start(stdout=sys.stdout, stderr=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    signal.signal(signal.SIGINT, lambda *_: process.terminate())
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
