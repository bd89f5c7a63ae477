"""The launcher reports every child that exits, reaps it, says what still runs and carries on,
or stops everything when the site cannot go on. The rule, read from devstack.children; then
`make run` itself (the embedded profile) with a consumer and then its Kafka broker killed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from devstack.children import APP, KAFKA, POSTGRES, REDIS, REGISTRY, SETUP, Child, exit_status, summary, verdict
from harness.http_client import order_and_pay
from harness.make_run import BASE_DIR, MakeRun, state_of


class Exited:
    """A process as the verdict sees it once it has ended: only its return code matters."""

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode


def child(name: str, kind: str = APP, service: str = "", returncode: int = -9) -> Child:
    return Child(name, Exited(returncode), kind, service=service or (name.rpartition("-")[0] or name))


CLUSTER = [
    *(child(f"kafka-{n}", KAFKA, service="kafka") for n in (1, 2, 3)),
    child("postgres", POSTGRES),
    child("redis", REDIS),
    child("schema-registry", REGISTRY),
    *(child(f"{service}-{n}") for service in ("web", "stats", "worker") for n in (1, 2)),
    child("beat", service="beat"),
]
EMBEDDED = [child("kafka", KAFKA, service="kafka"), *(child(name, service=name) for name in ("web", "stats", "beat"))]


def without(children: list[Child], *names: str) -> list[Child]:
    return [c for c in children if c.name not in names]


def named(children: list[Child], name: str) -> Child:
    return next(c for c in children if c.name == name)


def test_how_a_child_ended_reads_as_a_person_says_it():
    assert exit_status(0) == "exited with 0"
    assert exit_status(1) == "exited with 1"
    assert exit_status(-signal.SIGKILL) == "was killed by SIGKILL"
    assert exit_status(-signal.SIGTERM) == "was killed by SIGTERM"


def test_a_kafka_node_gone_is_a_failover_to_watch_not_a_reason_to_stop():
    one_down = verdict(named(CLUSTER, "kafka-2"), without(CLUSTER, "kafka-2"), CLUSTER)
    assert not one_down.stop
    assert one_down.meaning.startswith("Kafka runs on with 2 of 3 nodes (kafka-1, kafka-3): the partitions kafka-2 led")
    two_down = verdict(named(CLUSTER, "kafka-3"), without(CLUSTER, "kafka-2", "kafka-3"), CLUSTER)
    assert not two_down.stop
    assert two_down.meaning.startswith("Kafka has 1 of 3 nodes left (kafka-1): no controller quorum")
    assert "the web keeps taking orders into the outbox" in two_down.meaning


def test_the_embedded_broker_gone_leaves_the_web_taking_orders_and_says_how_to_start_it():
    broker = Child("kafka", Exited(-9), KAFKA, restart="python -m devstack.kafka_node --home H --port 9092")
    gone = verdict(broker, without(EMBEDDED, "kafka"), [broker, *without(EMBEDDED, "kafka")])
    assert not gone.stop
    assert gone.meaning.startswith("Kafka is down: the web keeps taking orders into the outbox, the consumers wait")
    assert "`python -m devstack.kafka_node --home H --port 9092` starts it again" in gone.meaning


def test_beat_gone_under_the_cluster_profile_is_reported_and_the_rest_runs_on():
    gone = verdict(named(CLUSTER, "beat"), without(CLUSTER, "beat"), CLUSTER)
    assert not gone.stop
    assert gone.meaning.startswith("beat is gone: nothing schedules the outbox's periodic task")


def test_a_copy_gone_leaves_its_twin_and_the_last_copy_of_a_consumer_leaves_the_rest_running():
    first = verdict(named(CLUSTER, "stats-1"), without(CLUSTER, "stats-1"), CLUSTER)
    assert not first.stop
    assert first.meaning.startswith("the group gives stats-1's partitions to stats-2")
    last = verdict(named(CLUSTER, "stats-2"), without(CLUSTER, "stats-1", "stats-2"), CLUSTER)
    assert not last.stop
    assert last.meaning.startswith("no copy of stats runs: the staff page's figures stand still")
    assert not verdict(named(EMBEDDED, "stats"), without(EMBEDDED, "stats"), EMBEDDED).stop


def test_everything_stops_when_the_site_cannot_take_orders_any_more():
    assert not verdict(named(CLUSTER, "web-1"), without(CLUSTER, "web-1"), CLUSTER).stop  # web-2 serves
    assert verdict(named(CLUSTER, "web-2"), without(CLUSTER, "web-1", "web-2"), CLUSTER).stop
    assert verdict(named(EMBEDDED, "web"), without(EMBEDDED, "web"), EMBEDDED).stop
    assert verdict(named(CLUSTER, "postgres"), without(CLUSTER, "postgres"), CLUSTER).stop
    assert not verdict(named(CLUSTER, "redis"), without(CLUSTER, "redis"), CLUSTER).stop
    registry = verdict(named(CLUSTER, "schema-registry"), without(CLUSTER, "schema-registry"), CLUSTER)
    assert not registry.stop
    assert "keep the schema ids they have" in registry.meaning
    assert "nothing is lost" in registry.meaning


def test_a_setup_step_stops_everything_only_when_it_failed():
    assert verdict(child("migrate", SETUP, returncode=1), EMBEDDED, EMBEDDED).stop
    done = verdict(child("migrate", SETUP, returncode=0), EMBEDDED, EMBEDDED)
    assert not done.stop
    assert done.meaning == ""


def test_what_still_runs_counts_the_copies():
    assert summary(without(CLUSTER, "kafka-2", "stats-1")) == (
        "kafka-1, kafka-3, postgres, redis, schema-registry, web ×2, stats-2, worker ×2, beat"
    )


# -- `make run`, for real -------------------------------------------------------------------


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    run = MakeRun(tmp_path_factory.mktemp("make-run"))
    try:
        # Another program takes the port the test picked before the launcher starts: the
        # launcher refuses it, the test picks others (test_the_test_picks_other_ports_...).
        with socket.create_server(("127.0.0.1", run.port)):
            run.taken_first = run.port
            run.start()
        yield run
    finally:
        run.close()


def test_the_test_picks_other_ports_when_the_launcher_finds_its_pick_taken(make_run):
    assert make_run.port != make_run.taken_first
    refused = (make_run.home / "launcher-1.log").read_text()
    assert f"port {make_run.taken_first} (PORT) is taken by another program" in refused


def kill_9(make_run: MakeRun, name: str) -> int:
    pid = make_run.children()[name]
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_consumer_killed_is_reported_at_once_reaped_and_the_rest_runs_on(make_run):
    before = make_run.children()
    pid = kill_9(make_run, "stats")
    make_run.wait_for(r"launcher\s+\| stats was killed by SIGKILL$", timeout=10)
    make_run.wait_for(r"launcher\s+\| no copy of stats runs: the staff page's figures stand still", timeout=5)
    assert state_of(pid) is None  # reaped, not a zombie
    assert make_run.children() == {name: pid for name, pid in before.items() if name != "stats"}
    assert requests.get(f"{make_run.url}/healthz", timeout=10).status_code == 200
    order_and_pay(requests.Session(), make_run.url)


def test_its_broker_killed_is_reported_and_the_web_keeps_taking_orders(make_run):
    pid = kill_9(make_run, "kafka")
    make_run.wait_for(r"launcher\s+\| kafka was killed by SIGKILL$", timeout=10)
    said = make_run.wait_for(r"launcher\s+\| (Kafka is down: .*)$", timeout=5).group(1)
    assert said.startswith("Kafka is down: the web keeps taking orders into the outbox, the consumers wait")
    assert f"--port {make_run.kafka_port}` starts it again" in said
    assert said.endswith("Still running: web, deliveries, notifications, recommendations, deadletters, worker, beat")
    assert state_of(pid) is None
    order_and_pay(requests.Session(), make_run.url)  # into the outbox: the customer does not notice
    time.sleep(2)  # the consumers and the relay meet the dead broker: none of them falls over
    assert set(make_run.children()) == {"web", "deliveries", "notifications", "recommendations", "deadletters",
                                        "worker", "beat"}  # fmt: skip


def test_ctrl_c_still_stops_what_is_left_cleanly(make_run):
    left = make_run.children()
    assert make_run.interrupt() == 0, make_run.output()[-3000:]
    stop = make_run.output().split("| stopping", 1)[1]
    assert "killing it" not in stop, stop
    assert "stopped in" in stop.rstrip().rsplit("\n", 1)[-1], stop[-3000:]
    assert all(state_of(pid) is None for pid in left.values())
    print("\n".join(make_run.launcher_lines()))  # what the operator read, for the record (pytest -s)


@pytest.mark.parametrize("setting", ["PORT", "KAFKA_PORT"])
def test_a_port_the_user_named_is_not_moved_the_error_names_it(setting, tmp_path):
    run = MakeRun(tmp_path)
    port = int(run.env[setting])
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", port))
        other_program.listen()
        with run.log.open("wb") as sink:
            launcher = subprocess.run(
                [sys.executable, "-m", "devstack.launcher"], cwd=BASE_DIR, env=run.env, stdout=sink,
                stderr=subprocess.STDOUT, timeout=60,
            )  # fmt: skip
    assert launcher.returncode == 1
    assert f"is taken by another program; stop it or set {setting} to a free port" in run.output()
    named = rf"launcher\s+\| error: (the web|Kafka) cannot listen on 127.0.0.1:{port}: port {port} \({setting}\)"
    assert re.search(named, run.output()), run.output()
    assert "Kafka at" not in run.output()  # said before anything started


def test_ctrl_c_while_it_starts_stops_what_was_started(tmp_path):
    run = MakeRun(tmp_path)
    with run.log.open("wb") as sink:
        run.process = subprocess.Popen(
            [sys.executable, "-m", "devstack.launcher"], cwd=BASE_DIR, env=run.env, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        run.wait_for(r"^\S+ kafka\s+\|", timeout=60)  # the JVM is starting
        started = run.children()
        assert "kafka" in started
        assert run.interrupt(timeout=60) == 0, run.output()[-3000:]
        assert run.output().rstrip().rsplit("\n", 1)[-1].split("| ", 1)[1].startswith("stopped in")
        assert "ready in" not in run.output()
        assert all(state_of(pid) is None for pid in started.values())
    finally:
        run.close()
