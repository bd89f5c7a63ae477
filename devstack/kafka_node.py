"""A real Apache Kafka broker on this machine, from the jars `make` fetched from Maven Central.

One KRaft node (broker and controller in one process, no ZooKeeper), on 127.0.0.1. Used by
`make run` (through devstack.launcher) and by the test suite's session fixture; also one node
of devstack.kafka_cluster's three (node id, the shared quorum and replication as parameters).
No Django here: it must run before settings or a database exist.

    python -m devstack.kafka_node --home .local/kafka/data --port 9092   # foreground
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_LIBS = BASE_DIR / ".local" / "kafka" / "libs"
LOG_CONFIG = BASE_DIR / "kafka" / "log4j2.yaml"
FETCH_HINT = (
    "run `make setup`, which fetches them from Maven Central with: mvn -q -B -f kafka/pom.xml "
    'dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/.local/kafka/libs"'
)


class KafkaExited(TimeoutError, RuntimeError):
    """The broker process ended before it answered (a TimeoutError too: it will never be ready)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_cluster_id() -> str:
    # What `kafka-storage random-uuid` prints (16 random bytes, URL-safe base64, no padding),
    # without paying for a JVM start. Kafka never hands out ids starting with "-" (CLI trouble).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 16_384))
            text = log.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    # Without Java's stack frames the reason ("Failed to acquire lock", "Address already in use")
    # stays within the tail.
    return "\n".join([line for line in text if not line.startswith(("\tat ", "\t... "))][-lines:])


class LocalKafka:
    def __init__(
        self,
        home: Path,
        port: int = 9092,
        controller_port: int | None = None,
        libs: Path = DEFAULT_LIBS,
        java: str = "java",
        *,
        heap: str = "512m",
        node_id: int = 1,
        voters: dict[int, int] | None = None,
        replication_factor: int = 1,
        cluster_id: str | None = None,
        nice: int = 0,
    ) -> None:
        """`voters`: every controller of the quorum, node id -> controller port (default: this
        node alone). `replication_factor`: of the internal topics and the default for new ones;
        min.insync.replicas follows (2 from 2 replicas up). `cluster_id`: shared by every node of
        a cluster; by default one is made and kept in home/cluster.id. `nice`: the JVM's CPU
        priority (tests run brokers below the web processes they measure)."""
        self.home = Path(home).resolve()
        self.port = port
        # Any free port will do, and it may differ between runs on the same home: the quorum is
        # static (controller.quorum.voters), so the controller's address is not in the data.
        self.controller_port = controller_port or (voters or {}).get(node_id) or free_port()
        self.libs = Path(libs)
        self.java = java
        self.heap = heap
        self.node_id = node_id
        self.voters = dict(voters) if voters else {node_id: self.controller_port}
        if self.voters.get(node_id) != self.controller_port:
            raise ValueError(f"node {node_id}'s controller port {self.controller_port} is not its entry in {voters}")
        self.replication_factor = replication_factor
        self.nice = nice
        self.cluster_id = cluster_id
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_file(self) -> Path:
        """Where start() sends the broker's output when the caller does not take it."""
        return self.home / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "logs"  # Kafka's name: its "logs" are the partitions' data

    def settings(self) -> dict[str, str]:
        replicas = str(self.replication_factor)
        # Two copies must have an event before acks=all counts it written; one node has only one.
        min_isr = str(min(2, self.replication_factor))
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # The same on every node of a cluster: each node id with its controller's address.
            "controller.quorum.voters": ",".join(
                f"{node}@127.0.0.1:{port}" for node, port in sorted(self.voters.items())
            ),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Topics are created on purpose (with their partitions and retention), never by a typo.
            "auto.create.topics.enable": "false",
            "num.partitions": "3",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            # A replica that was out of sync never becomes leader: it would drop acknowledged events.
            "unclean.leader.election.enable": "false",
            # Internal topics as replicated as the data (one node: 1, their default of 3 would
            # fail); 3 partitions, not 50, or the first consumer group is slow to start.
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": "3",
            # Nobody else to wait for: a classic consumer group gets its partitions at once.
            "group.initial.rebalance.delay.ms": "0",
            # The compaction buffer is 128 MiB of heap by default; __consumer_offsets needs little.
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            # After a kill -9 the controller refuses the restarted broker ("Another broker is registered
            # with that broker id") until the old session expires: 9 s by default, 5 s here (still
            # five missed 1 s heartbeats before a busy machine could get the broker fenced).
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "5000",
            # 2 cores: fewer idle threads than the defaults (8 I/O, 10 background).
            "num.io.threads": "4",
            "background.threads": "4",
        }

    def command(self, main: str, *args: str, heap: str | None = None, quick: bool = False) -> list[str]:
        """The java command line for one of Kafka's main classes, on the fetched jars."""
        if not self.libs.is_dir() or not any(self.libs.glob("kafka_2.13-*.jar")):
            raise FileNotFoundError(f"no Kafka jars in {self.libs}: {FETCH_HINT}")
        return [
            *(["nice", "-n", str(self.nice)] if self.nice else []),
            self.java,
            f"-Xmx{heap or self.heap}",
            # A short-lived tool (the formatter) starts faster on the quick compiler alone.
            *(["-XX:TieredStopAtLevel=1"] if quick else ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]),
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-cp",
            f"{self.libs}/*",  # java expands the wildcard itself
            main,
            *args,
        ]

    def ensure_formatted(self) -> None:
        """Write server.properties (ports may change between runs) and format the storage once.

        The cluster id is kept in home/cluster.id, so an interrupted format is redone with the
        same id and a second run finds its topics, offsets and groups again."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("".join(f"{key}={value}\n" for key, value in self.settings().items()))
        if (self.data_dir / "meta.properties").exists():
            return
        id_file = self.home / "cluster.id"
        if self.cluster_id is not None:
            id_file.write_text(self.cluster_id + "\n")
        elif not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        formatter = self.command(
            "kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", cluster_id, "-c", str(self.config_file),
            heap="256m", quick=True,
        )  # fmt: skip
        done = subprocess.run(formatter, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"formatting {self.data_dir} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self, stdout: Any = None, stderr: Any = None, **popen: Any) -> subprocess.Popen:
        """Start the broker in the background and return its process (not yet ready: wait_ready).

        Output goes to home/kafka.log unless `stdout` says otherwise; `popen` goes to Popen
        as is (the launcher passes start_new_session, preexec_fn)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"Kafka is already running (pid {self.process.pid})")
        command = self.command("kafka.Kafka", str(self.config_file))  # fails early if the jars are missing
        self.ensure_formatted()
        if stdout is None:
            self._log = self.log_file.open("ab")
            stdout = self._log
            stderr = subprocess.STDOUT if stderr is None else stderr
        self.process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, **popen)
        return self.process

    def wait_ready(self, timeout: float = 60) -> None:
        """Return once the broker answers a metadata request; raise TimeoutError otherwise."""
        # Without the backoff cap librdkafka waits up to 10 s between connection attempts, which
        # would add seconds after the broker is up. log_level 0: no "Connection refused" spam.
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers, "log_level": 0, "reconnect.backoff.max.ms": 200}
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaExited(f"Kafka exited with {self.process.returncode} before it was ready{self._log_tail()}")
            try:
                if admin.list_topics(timeout=1).brokers:
                    return
            except KafkaException:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka on {self.bootstrap_servers} did not answer within {timeout:g} s{self._log_tail()}"
                )
            time.sleep(0.2)

    def _log_tail(self) -> str:
        if self._log is None:
            return " (its output went to the caller)"
        self._log.flush()
        return f"; the end of {self.log_file}:\n{_tail(self.log_file)}"

    def kill(self) -> None:
        """SIGKILL: a crash (no controlled shutdown; the next start recovers the logs)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a controlled shutdown: logs closed cleanly, no recovery on the next start),
        then SIGKILL if it has not exited after `timeout` seconds."""
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

    def __enter__(self) -> LocalKafka:
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
    parser = argparse.ArgumentParser(description="Run a local single-node Kafka broker in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "kafka" / "data")
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    parser.add_argument("--controller-port", type=int, default=None)
    parser.add_argument("--libs", type=Path, default=DEFAULT_LIBS)
    args = parser.parse_args(argv)
    broker = LocalKafka(args.home, port=args.port, controller_port=args.controller_port, libs=args.libs)
    try:
        command = broker.command("kafka.Kafka", str(broker.config_file))
        broker.ensure_formatted()
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # Become the JVM: same pid, signals reach java directly, its exit code is ours.
        os.execvp(command[0], command)
    process = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: process.terminate())
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
