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
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from devstack.local_server import LocalServer, PortClash, ServerExited
from devstack.ports import free_port

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_LIBS = BASE_DIR / ".local" / "kafka" / "libs"
LOG_CONFIG = BASE_DIR / "kafka" / "log4j2.yaml"
FETCH_HINT = (
    "run `make setup`, which fetches them from Maven Central with: mvn -q -B -f kafka/pom.xml "
    'dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/.local/kafka/libs"'
)


class KafkaExited(ServerExited):
    """The broker process ended before it answered (a TimeoutError too: it will never be ready)."""


# free_port lives in devstack.ports; the tests and benches import it from here too.
__all__ = ["KafkaExited", "LocalKafka", "free_port", "new_cluster_id"]


def new_cluster_id() -> str:
    # What `kafka-storage random-uuid` prints (16 random bytes, URL-safe base64, no padding),
    # without paying for a JVM start. Kafka never hands out ids starting with "-" (CLI trouble).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka(LocalServer):
    label = "Kafka"
    log_name = "kafka.log"
    exited = KafkaExited

    def __init__(
        self,
        home: Path,
        port: int | None = None,
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
        port_setting: str | None = None,
        port_movable: bool | None = None,
    ) -> None:
        """`port`: None picks a free one (moved if taken, see devstack.local_server); a given one
        stays, and `port_setting` names where it came from (KAFKA_PORT) for the error if taken.
        `port_movable`: a cluster's say on a port it picked for its node. `voters`: every
        controller of the quorum, node id -> controller port (default: this node alone).
        `replication_factor`: of the internal topics and the default for new ones;
        min.insync.replicas follows (2 from 2 replicas up). `cluster_id`: shared by every node of
        a cluster; by default one is made and kept in home/cluster.id. `nice`: the JVM's CPU
        priority (tests run brokers below the web processes they measure)."""
        super().__init__(home, port, port_setting=port_setting)
        if port_movable is not None:
            self.port_movable = port_movable
        # Any free port will do, and it may differ between runs on the same home: the quorum is
        # static (controller.quorum.voters), so the controller's address is not in the data.
        # A cluster's nodes share the quorum, so only the cluster may move their controllers.
        self.in_cluster = voters is not None
        self.controller_port = controller_port or (voters or {}).get(node_id) or free_port()
        self.controller_port_movable = not controller_port or self.in_cluster
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
        self._admin: tuple[str, AdminClient] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

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

    def _spawn(self, stdout: Any, popen: dict[str, Any]) -> subprocess.Popen:
        command = self.command("kafka.Kafka", str(self.config_file))  # fails early if the jars are missing
        self.ensure_formatted()
        return subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)

    def _answers(self) -> bool:
        """The broker answers a metadata request."""
        # Without the backoff cap librdkafka waits up to 10 s between connection attempts, which
        # would add seconds after the broker is up. log_level 0: no "Connection refused" spam.
        if self._admin is None or self._admin[0] != self.bootstrap_servers:
            config = {"bootstrap.servers": self.bootstrap_servers, "log_level": 0, "reconnect.backoff.max.ms": 200}
            self._admin = (self.bootstrap_servers, AdminClient(config))
        try:
            return bool(self._admin[1].list_topics(timeout=1).brokers)
        except KafkaException:
            return False  # not listening yet

    def _ports(self) -> list[int]:
        return [self.port, self.controller_port]

    def _fixed_ports(self) -> dict[int, str | None]:
        fixed = super()._fixed_ports()
        if self.controller_port_movable:
            return fixed  # in a cluster, the cluster's to move (PortClash): the quorum names it
        return fixed | {self.controller_port: None}

    def _settle(self) -> None:
        super()._settle()
        self.controller_port_movable = False

    def _move(self, taken: set[int]) -> str:
        if self.in_cluster:
            raise PortClash(self.node_id, taken)
        moved = []
        if self.port in taken:
            old, self.port = self.port, free_port()
            moved.append(f"port {old} was taken: the broker listens on {self.port}")
        if self.controller_port in taken:
            old = self.controller_port
            self.controller_port = free_port()
            self.voters = {self.node_id: self.controller_port}
            moved.append(f"port {old} was taken: the controller listens on {self.controller_port}")
        return f"{'; '.join(moved)}; starting again"


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
