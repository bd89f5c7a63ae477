"""A real Kafka Connect worker on this machine: Apache Kafka's distributed worker from Maven
Central, with Debezium's PostgreSQL connector on its plugin path (no Docker).

The worker's jars (connect-runtime 4.3 with connect-json, connect-transforms, log4j2; see
kafka/connect/pom.xml) are copied once by `make connect-deps` into .local/connect/libs, and the
connector's `plugin` archive (debezium-connector-postgres) unpacked into .local/connect/plugins:
on `plugin.path`, never on the worker's classpath, so that its own kafka-clients and PostgreSQL
driver stay in its own class loader. Distributed mode even for one worker: its connectors,
their offsets and their state live in Kafka topics (replicated like the event topics), so a
worker killed and started again (or a second one) carries on where the group stood, and the
connector is registered through the REST API (eventing.debezium) rather than a file.
`exactly.once.source.support=enabled`: a source task's records and its offsets are written in
one Kafka transaction.
No Django here: it must run before settings exist.

    python -m devstack.kafka_connect --bootstrap 127.0.0.1:9092 --port 8083   # foreground
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devstack.local_server import LocalServer, ServerExited

BASE_DIR = Path(__file__).resolve().parent.parent
LIBS = BASE_DIR / ".local" / "connect" / "libs"
PLUGINS = BASE_DIR / ".local" / "connect" / "plugins"
LOG_CONFIG = BASE_DIR / "kafka" / "connect" / "log4j2.properties"
FETCH_HINT = "`make connect-deps` fetches them (Makefile: .local/connect, from Maven Central)"
GROUP = "foodsite-connect"


class ConnectExited(ServerExited):
    """The worker ended before it answered."""


class ConnectUnavailable(RuntimeError):
    """The worker cannot be started here (its jars or the connector are missing): says what to do."""


class LocalConnect(LocalServer):
    label = "Kafka Connect"
    log_name = "connect.log"
    exited = ConnectExited

    def __init__(
        self,
        home: Path,
        bootstrap_servers: str,
        port: int | None = None,
        *,
        replication_factor: int = 1,
        group: str = GROUP,
        topic_prefix: str = "",
        port_setting: str | None = None,
    ) -> None:
        """`group`: the Connect cluster (workers of one group share connectors); its internal
        topics are `<topic_prefix><group>-configs`, `-offsets` and `-status`."""
        super().__init__(home, port, port_setting=port_setting)
        self.bootstrap_servers = bootstrap_servers
        self.replication_factor = replication_factor
        self.group = group
        self.topic_prefix = topic_prefix

    @property
    def url(self) -> str:
        """Its REST API, as CONNECT_URL takes it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / "worker.properties"

    def settings(self) -> dict[str, str]:
        internal = f"{self.topic_prefix}{self.group}"
        factor = str(self.replication_factor)
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group,
            "config.storage.topic": f"{internal}-configs",
            "offset.storage.topic": f"{internal}-offsets",
            "status.storage.topic": f"{internal}-status",
            "config.storage.replication.factor": factor,
            "offset.storage.replication.factor": factor,
            "status.storage.replication.factor": factor,
            # 2 cores, one connector: the defaults' 25 offset partitions are 25 logs for nothing.
            "offset.storage.partitions": "5",
            "exactly.once.source.support": "enabled",
            # The outbox's events are bytes already encoded by the web (the row's `value`), and
            # its key a string: written as they are, no Connect schema around them.
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            "listeners": f"http://127.0.0.1:{self.port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.port),
            "plugin.path": str(PLUGINS),
            # Debezium's connector only: no scanning of the worker's own classpath for plugins
            # it does not use (seconds of every start on 2 cores).
            "plugin.discovery": "service_load",
            # A killed worker's tasks move (or wait for it) after this, not the default 5 minutes.
            "scheduled.rebalance.max.delay.ms": "10000",
            "offset.flush.interval.ms": "1000",
        }

    def command(self) -> list[str]:
        if not LIBS.is_dir() or not any(LIBS.glob("connect-runtime-*.jar")):
            raise ConnectUnavailable(f"no Kafka Connect jars in {LIBS}: {FETCH_HINT}")
        if not any(PLUGINS.glob("debezium-connector-postgres/*.jar")):
            raise ConnectUnavailable(f"no Debezium PostgreSQL connector in {PLUGINS}: {FETCH_HINT}")
        return [
            "java",
            "-Xmx384m",
            "-XX:+UseSerialGC",  # one small heap on a 2-core machine
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-cp", f"{LIBS}/*",
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(self.config_file),
        ]  # fmt: skip

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("".join(f"{key}={value}\n" for key, value in self.settings().items()))

    def _spawn(self, stdout: Any, popen: dict[str, Any]) -> subprocess.Popen:
        command = self.command()
        self._write_config()
        return subprocess.Popen(
            command, cwd=self.home, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )

    def _answers(self) -> bool:
        """Its REST API answers and the worker has joined its group (it lists the connectors)."""
        try:
            with urllib.request.urlopen(f"{self.url}/connectors", timeout=2) as answer:
                json.load(answer)
                return answer.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Kafka Connect worker in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "connect-worker")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CONNECT_PORT", "8083")))
    parser.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args(argv)
    worker = LocalConnect(args.home, args.bootstrap, port=args.port, replication_factor=args.replication_factor)
    try:
        command = worker.command()
    except ConnectUnavailable as exc:
        print(f"kafka connect: {exc}", file=sys.stderr)
        return 1
    worker._write_config()
    print(f"kafka connect on {worker.url}", flush=True)
    os.chdir(worker.home)
    os.execv("/usr/bin/env", ["/usr/bin/env", *command])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
