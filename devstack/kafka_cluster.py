"""A local three-node Apache Kafka cluster, from the same Maven jars as devstack.kafka_node.

Each node is a LocalKafka (broker and controller in one process, KRaft) on 127.0.0.1 with its
own ports and data under home/node-<id>; the three controllers form one static quorum. Topics
get 3 replicas by default, `min.insync.replicas=2` (an acks=all write is on two nodes before it
counts), unclean leader election off; the internal topics (consumer offsets, transaction
state, share coordinator) are replicated the same way. Node ids are 1, 2, 3: Kafka's own ids,
the ones a partition's leader, replicas and ISR name. Used by the launcher's cluster profile
(FOODSITE_PROFILE=cluster) and the tests' `kafka_cluster` fixture.

    python -m devstack.kafka_cluster --home .local/cluster/kafka --ports 9092,9093,9094   # foreground
"""

from __future__ import annotations

import argparse
import concurrent.futures
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from devstack.kafka_node import BASE_DIR, DEFAULT_LIBS, KafkaExited, LocalKafka, new_cluster_id
from devstack.local_server import MOVES, PortClash
from devstack.ports import free_ports

# Three JVMs share a 2-core machine with PostgreSQL, Redis and a dozen Python processes.
NODE_HEAP = "384m"


class LocalCluster:
    def __init__(
        self,
        home: Path,
        ports: list[int] | None = None,
        size: int = 3,
        libs: Path = DEFAULT_LIBS,
        *,
        heap: str = NODE_HEAP,
        nice: int = 0,
        port_setting: str | None = None,
    ) -> None:
        """`ports`: the brokers', which stay (`port_setting` names where the first came from,
        e.g. KAFKA_PORT, the others being the next ones); None picks free ones, moved if taken.
        The controllers always take free ports, moved if taken (the whole cluster starts again:
        the quorum names them all)."""
        self.home = Path(home).resolve()
        self.ports_movable = not ports
        ports = list(ports) if ports else free_ports(size)
        if len(ports) != size:
            raise ValueError(f"{size} nodes need {size} ports, got {ports}")
        # The quorum is static (controller.quorum.voters), not written in the data: fresh ports
        # on every run are fine.
        controller_ports = free_ports(size, taken=set(ports))
        voters = {node_id: port for node_id, port in zip(self.node_ids(size), controller_ports, strict=True)}
        self.home.mkdir(parents=True, exist_ok=True)
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        self.nodes: list[LocalKafka] = [
            LocalKafka(
                self.home / f"node-{node_id}",
                port=port,
                controller_port=voters[node_id],
                libs=libs,
                heap=heap,
                node_id=node_id,
                voters=voters,
                replication_factor=min(3, size),
                cluster_id=cluster_id,
                nice=nice,
                port_setting=port_setting and (port_setting if index == 0 else f"{port_setting} + {index}"),
                port_movable=self.ports_movable,
            )
            for index, (node_id, port) in enumerate(zip(self.node_ids(size), ports, strict=True))
        ]
        self._output: Callable[[int, str], None] | None = None
        self._popen: dict[str, Any] = {}

    @staticmethod
    def node_ids(size: int) -> range:
        return range(1, size + 1)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} (nodes are {[n.node_id for n in self.nodes]})")

    def start(self, output: Callable[[int, str], None] | None = None, **popen: Any) -> None:
        """Start every node (formatting the fresh ones in parallel); not yet ready: wait_ready.

        `output(node_id, line)` takes every node's output if given (else each node's kafka.log);
        `popen` goes to every node's Popen. Both are used again by start_node later."""
        self._output, self._popen = output, popen
        # The JVMs that format fresh storage run in parallel; the nodes themselves start from
        # this thread: a child asking for PR_SET_PDEATHSIG (the launcher's) would be killed when
        # the pool thread that started it ends.
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for formatted in [pool.submit(node.ensure_formatted) for node in self.nodes]:
                formatted.result()
        for node in self.nodes:
            self.start_node(node.node_id)

    def wait_ready(self, timeout: float = 120) -> None:
        """Return once every node answers and every broker is registered (unfenced) in the
        cluster's metadata, as each node sees it. A node that could not listen on a port the
        cluster picked: every node is started again, that port replaced (up to MOVES times)."""
        deadline = time.monotonic() + timeout
        moves = 0
        while True:
            try:
                for node in self.nodes:
                    self.wait_node_ready(node.node_id, max(0.0, deadline - time.monotonic()), self._none_ended)
                return
            except PortClash as clash:
                if moves == MOVES:
                    raise KafkaExited(f"Kafka node {clash.node_id} found its ports taken {MOVES + 1} times") from None
                moves += 1
                self._move(clash)

    def _move(self, clash: PortClash) -> None:
        """Give the taken ports new ones, kill every node (fresh: nothing to shut down cleanly)
        and start them all again with the new quorum."""
        victim = self.node(clash.node_id)
        voters = {node.node_id: node.controller_port for node in self.nodes}
        in_use = set(voters.values()) | {node.port for node in self.nodes}
        moved = []
        if victim.controller_port in clash.ports:
            [voters[victim.node_id]] = free_ports(1, taken=in_use)
            moved.append(f"port {victim.controller_port} was taken: its controller listens on {voters[victim.node_id]}")
        broker_port = victim.port
        if victim.port in clash.ports:  # only a port the cluster picked: a given one raised PortTaken
            [broker_port] = free_ports(1, taken=in_use | set(voters.values()))
            moved.append(f"port {victim.port} was taken: its broker listens on {broker_port}")
        victim.say(f"node {victim.node_id}: {'; '.join(moved)}; the cluster starts again")
        for node in self.nodes:
            node.kill()
        victim.port = broker_port
        for node in self.nodes:
            node.voters = dict(voters)
            node.controller_port = voters[node.node_id]
            # Not ready as a cluster yet: what the cluster picked may still move.
            node.port_movable = self.ports_movable
            node.controller_port_movable = True
        for node in self.nodes:
            self.start_node(node.node_id)

    def _none_ended(self) -> None:
        """At the cluster's start: raise why a node has ended (PortClash if a port was taken,
        see LocalServer.wait_ready). Waiting for one node, another may be the one that failed,
        and the first, without a quorum, would wait for it until the timeout."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                node.wait_ready(timeout=0)

    def wait_node_ready(
        self, node_id: int, timeout: float = 60, while_waiting: Callable[[], None] | None = None
    ) -> None:
        """Return once the node answers and sees every broker of the cluster registered, itself
        included (after a kill -9 the controller refuses its registration until the old
        session expires: broker.session.timeout.ms, 5 s). `while_waiting`: LocalServer.wait_ready's."""
        node = self.node(node_id)
        deadline = time.monotonic() + timeout
        node.wait_ready(timeout, while_waiting)
        admin = AdminClient(
            {"bootstrap.servers": node.bootstrap_servers, "log_level": 0, "reconnect.backoff.max.ms": 200}
        )
        wanted = {n.node_id for n in self.nodes if n.process is not None and n.process.poll() is None}
        while True:
            if node.process is not None and node.process.poll() is not None:
                raise KafkaExited(f"node {node_id} exited with {node.process.returncode} before it was ready")
            if while_waiting is not None:
                while_waiting()
            try:
                if wanted <= set(admin.list_topics(timeout=1).brokers):
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node {node_id} did not see brokers {sorted(wanted)} registered within {timeout:g} s"
                )
            time.sleep(0.2)

    def live_brokers(self, timeout: float = 5) -> set[int]:
        """The broker ids in the cluster's metadata (registered and not fenced)."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        return set(admin.list_topics(timeout=timeout).brokers)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        self.node(node_id).kill()

    def stop_node(self, node_id: int) -> None:
        """SIGTERM one node: a controlled shutdown (its leaderships move first)."""
        self.node(node_id).stop()

    def start_node(self, node_id: int) -> None:
        output = self._output
        self.node(node_id).start(output and (lambda line: output(node_id, line)), **self._popen)

    def stop(self) -> None:
        """Stop every node, all at once: one by one, the last nodes would wait for a quorum
        that is gone to accept their controlled shutdown."""
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for stopped in [pool.submit(node.stop) for node in self.nodes]:
                stopped.result()

    def __enter__(self) -> LocalCluster:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ports(text: str) -> list[int]:
    return [int(port) for port in text.split(",") if port.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local three-node Kafka cluster in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "cluster" / "kafka")
    parser.add_argument(
        "--ports", type=_ports, default=None, help="the brokers' ports, comma-separated (default: free ones)"
    )
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--libs", type=Path, default=DEFAULT_LIBS)
    args = parser.parse_args(argv)
    cluster = LocalCluster(
        args.home, ports=args.ports, size=len(args.ports) if args.ports else args.size, libs=args.libs
    )
    stopping = threading.Event()
    # Until ready, Ctrl-C interrupts the wait (KeyboardInterrupt); then it ends the loop below.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        cluster.start(_echo, start_new_session=True)
        started = time.monotonic()
        cluster.wait_ready()
        print(f"ready in {time.monotonic() - started:.1f} s: {cluster.bootstrap_servers}", flush=True)
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        while not stopping.wait(0.5):
            for node in cluster.nodes:
                if node.process.poll() is not None:
                    print(f"node {node.node_id} exited with {node.process.returncode}", file=sys.stderr)
                    return 1
        return 0
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"localcluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()


def _echo(node_id: int, line: str) -> None:
    sys.stdout.write(f"node-{node_id} | {line}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
