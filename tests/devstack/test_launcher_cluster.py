"""The cluster profile's process list, from the real Procfile: two copies of everything, each
web copy on its own port, Celery beat exactly once. Then the profile itself: a Kafka node and
beat killed -9 are reported, reaped, and the rest runs on; Ctrl-C stops it all."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from devstack.launcher import BASE_DIR, cluster_processes, read_procfile
from harness.http_client import order_and_pay
from harness.make_run import MakeRun, state_of


def beats(command: str) -> bool:
    words = command.split()
    return words[:1] == ["celery"] and ("beat" in words or "--beat" in words)


def test_every_procfile_process_runs_twice_but_beat_runs_once():
    entries = read_procfile(BASE_DIR / "Procfile")
    processes = cluster_processes(entries, port=18000)

    names = [name for name, _, _ in processes]
    for name, command in entries:
        copies = [n for n in names if n == name or n.rpartition("-")[0] == name]
        assert len(copies) == (1 if beats(command) and "--beat" not in command.split() else 2), (name, copies)
    webs = {name: env["PORT"] for name, _, env in processes if name.startswith("web-")}
    assert webs == {"web-1": "18000", "web-2": "18001"}
    # Two beats would queue every periodic task twice.
    assert len([name for name, command, _ in processes if beats(command)]) == 1
    workers = [command.split() for name, command, _ in processes if name.startswith("worker-")]
    assert len(workers) == 2
    # Two workers of one node name would confuse Celery's remote control.
    assert {words[words.index("--hostname") + 1] for words in workers} == {"worker-1@%h", "worker-2@%h"}


def test_a_worker_that_runs_beat_keeps_it_in_its_first_copy_only():
    entries = [("worker", "celery -A foodsite worker --beat --concurrency 1")]
    commands = {name: command.split() for name, command, _ in cluster_processes(entries, port=18000)}
    assert "--beat" in commands["worker-1"]
    assert "--beat" not in commands["worker-2"]


# -- `FOODSITE_PROFILE=cluster make run`, for real: 3 JVMs, PostgreSQL, Redis, 15 processes -----


@pytest.fixture(scope="module")
def cluster_run() -> Iterator[MakeRun]:
    # Not under pytest's tmp root (0700): as root, PostgreSQL runs as `postgres`, who must enter it.
    home = Path(tempfile.mkdtemp(prefix="foodsite-test-cluster-run-"))
    home.chmod(0o755)
    run = MakeRun(home, profile="cluster")
    try:
        run.start(timeout=300)
        yield run
    finally:
        run.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.system
@pytest.mark.alone
def test_the_cluster_relays_its_events_by_debezium_with_the_schema_registry_s_ids(cluster_run):
    """The web writes the outbox row; Debezium on the Connect worker publishes it, the bytes as
    the web encoded them: Avro in the registry's framing."""
    assert {"schema-registry", "connect"} <= set(cluster_run.children())
    cluster_run.wait_for(
        r"register-connector\s*\| outbox connector foodsite-outbox-foodsite: RUNNING, tasks RUNNING;", timeout=5
    )
    cluster_run.wait_for(r"launcher\s+\| schema registry at http://127.0.0.1:\d+/apis/ccompat/v7$", timeout=5)
    order_id = order_and_pay(requests.Session(), cluster_run.url)
    registry = SchemaRegistryClient({"url": cluster_run.registry_url})
    deserializer = AvroDeserializer(registry)
    bootstrap = ",".join(f"127.0.0.1:{cluster_run.kafka_port + i}" for i in range(3))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics("orders", timeout=10).topics["orders"].partitions
        consumer.assign([TopicPartition("orders", p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None and message.value()[:1] == b"\x00":
                    value = deserializer(message.value(), SerializationContext("orders", MessageField.VALUE))
                    if value["data"]["order_id"] == order_id:
                        found = value
    finally:
        consumer.close()
    assert found is not None, "the order's event, in the registry's framing, not found on orders"
    assert (found["type"], found["data"]["lines"][0]["quantity"]) == ("order.placed", 1)


@pytest.mark.system
@pytest.mark.alone
def test_a_kafka_node_killed_is_reported_at_once_reaped_and_the_site_runs_on(cluster_run):
    before = cluster_run.children()
    assert {
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "postgres",
        "redis",
        "schema-registry",
        "connect",
        "web-1",
        "web-2",
        "beat",
    } <= set(before)
    pid = before["kafka-2"]
    os.kill(pid, signal.SIGKILL)
    cluster_run.wait_for(r"launcher\s+\| kafka-2 was killed by SIGKILL$", timeout=10)
    said = cluster_run.wait_for(r"launcher\s+\| (Kafka runs on with .*)$", timeout=5).group(1)
    assert said.startswith("Kafka runs on with 2 of 3 nodes (kafka-1, kafka-3): the partitions kafka-2 led get new")
    assert "Still running: kafka-1, kafka-3, postgres, redis, schema-registry, connect, web ×2, " in said
    assert state_of(pid) is None  # reaped, not a zombie until Ctrl-C
    for web in (cluster_run.url, f"http://127.0.0.1:{cluster_run.port + 1}"):
        order_and_pay(requests.Session(), web)
    assert cluster_run.children() == {name: pid for name, pid in before.items() if name != "kafka-2"}


@pytest.mark.system
@pytest.mark.alone
def test_beat_killed_is_reported_and_the_rest_runs_on(cluster_run):
    before = cluster_run.children()
    pid = before["beat"]
    os.kill(pid, signal.SIGKILL)
    cluster_run.wait_for(r"launcher\s+\| beat was killed by SIGKILL$", timeout=10)
    cluster_run.wait_for(r"launcher\s+\| beat is gone: nothing schedules the outbox's periodic task", timeout=5)
    assert state_of(pid) is None
    order_and_pay(requests.Session(), cluster_run.url)
    assert cluster_run.children() == {name: pid for name, pid in before.items() if name != "beat"}
    assert "stopping everything" not in cluster_run.output()


@pytest.mark.system
@pytest.mark.alone
def test_ctrl_c_then_stops_the_rest_of_the_cluster_cleanly(cluster_run):
    left = cluster_run.children()
    assert cluster_run.interrupt(timeout=120) == 0, cluster_run.output()[-3000:]
    stop = cluster_run.output().split("| stopping", 1)[1]
    assert "killing it" not in stop, stop[-3000:]
    assert "stopped in" in stop.rstrip().rsplit("\n", 1)[-1], stop[-3000:]
    assert all(state_of(pid) is None for pid in left.values())
    print("\n".join(cluster_run.launcher_lines()))  # what the operator read, for the record (pytest -s)
