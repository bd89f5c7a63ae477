"""The consumer services as real processes, on a real broker and a real SQLite file, under
kill -9, scale-out and scale-in, a broker restart, and poison events. Each test compares
the final projections with the ground truth of what was produced: nothing missing, nothing
counted twice."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from foodsite.kafka.topics import admin_client, declared_topics, ensure_topics, group_name
from foodsite.localkafka import LocalKafka, free_port
from tests.kafka_support import KafkaTestBed
from tests.streams import OrderStream

pytestmark = pytest.mark.system

BASE_DIR = Path(__file__).resolve().parents[2]
RESULTS = """
import json
from deliveries.selectors import deliveries_to_make
from stats.selectors import dish_sales, sales_totals
t = sales_totals()
print(json.dumps({
    "orders": t.orders, "revenue": str(t.revenue), "food_cost": str(t.food_cost),
    "dishes": {str(d.dish_id): d.quantity for d in sorted(dish_sales(), key=lambda d: d.dish_id)},
    "deliveries": sorted(str(d.order_id) for d in deliveries_to_make()),
}))
"""


class Services:
    """Consumer processes sharing one SQLite file, as `make run` starts them."""

    def __init__(self, home: Path, bootstrap_servers: str) -> None:
        self.env = {
            **os.environ,
            "FOODSITE_HOME": str(home),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
            "KAFKA_GROUP_PREFIX": settings.KAFKA_GROUP_PREFIX,
            # The broker's minimum: a killed member's partitions move on after 6 s.
            "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "PYTHONUNBUFFERED": "1",
        }
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.running: list[subprocess.Popen] = []
        self.log_files: dict[int, Path] = {}
        self.manage("migrate", "--noinput")

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start(self, command: str) -> subprocess.Popen:
        path = self.logs / f"{command}-{len(self.running)}.log"
        with path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", command, "--batch-size", "200"],
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append(process)
        self.log_files[process.pid] = path
        return process

    def stop(self, process: subprocess.Popen) -> int:
        """SIGTERM once the service runs (during Django's start-up nothing handles it yet)."""
        log = self.log_files[process.pid]
        deadline = time.monotonic() + 30
        while " consuming " not in log.read_text(errors="replace") and process.poll() is None:
            assert time.monotonic() < deadline, "service never started consuming"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=30)

    def catch_up(self) -> None:
        """Stop nothing; run each service once more until it has read everything, then exit."""
        for command in ("consume_stats", "consume_deliveries"):
            self.manage(command, "--until-caught-up")

    def results(self) -> dict:
        # The last line: Django's shell may print a banner first.
        return json.loads(self.manage("shell", "-c", RESULTS).strip().splitlines()[-1])

    def close(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def services(kafka: KafkaTestBed, tmp_path: Path) -> Iterator[Services]:
    services = Services(tmp_path, kafka.bootstrap_servers)
    yield services
    services.close()


def produce_in_background(
    stream: OrderStream, orders: int, waves: int, pause: float = 0.5, poison_every: int = 0
) -> threading.Thread:
    """Keeps producing while the test kills, adds and removes consumers."""

    def run() -> None:
        for _ in range(waves):
            stream.produce(orders // waves, poison_every=poison_every)
            time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_kill_9_at_random_moments_loses_and_doubles_nothing(kafka, services):
    stream = OrderStream(kafka.bootstrap_servers, seed=1)
    producer = produce_in_background(stream, orders=20_000, waves=10, pause=1.5)
    started = time.monotonic()
    chaos = random.Random(42)
    consumers = {name: services.start(name) for name in ("consume_stats", "consume_deliveries")}
    kills = 0
    while producer.is_alive() or kills < 4:
        time.sleep(chaos.uniform(1.0, 3.0))
        name = chaos.choice(sorted(consumers))
        consumers[name].kill()  # SIGKILL: no goodbye, no last commit
        consumers[name].wait()
        kills += 1
        consumers[name] = services.start(name)
    producer.join()
    for process in consumers.values():
        assert services.stop(process) == 0
    print(f"{time.monotonic() - started:.1f}s: producer done after {kills} kills")

    services.catch_up()
    print(f"{time.monotonic() - started:.1f}s: caught up")

    assert len(stream.truth.paid_orders) > 17_000
    assert services.results() == stream.truth.as_result()


def test_a_member_added_and_one_removed_mid_stream_with_poison_in_it(kafka, services):
    stream = OrderStream(kafka.bootstrap_servers, seed=2)
    producer = produce_in_background(stream, orders=20_000, waves=6, poison_every=997)
    first = services.start("consume_stats")
    time.sleep(3)
    second = services.start("consume_stats")  # the group splits the partitions between both
    time.sleep(4)
    assert services.stop(first) == 0  # the survivor takes its partitions back
    producer.join()
    assert services.stop(second) == 0

    services.catch_up()

    results = services.results()
    expected = stream.truth.as_result()
    assert {k: results[k] for k in ("orders", "revenue", "food_cost", "dishes")} == {
        k: expected[k] for k in ("orders", "revenue", "food_cost", "dishes")
    }
    letters = kafka.read_topic("orders.dlq")
    assert stream.truth.poison_sent > 10
    # Each group reports the events it could not process: once per poison event and group.
    for group in ("stats", "deliveries"):
        headers = [dict(m.headers()) for m in letters]
        sources = [
            (h["dlq.partition"], h["dlq.offset"]) for h in headers if h["dlq.group"] == group_name(group).encode()
        ]
        assert len(sources) == stream.truth.poison_sent, group
        assert len(set(sources)) == len(sources), group
    members_logs = "".join(p.read_text() for p in services.logs.glob("consume_stats-*.log"))
    assert "assigned" in members_logs
    assert "revoked" in members_logs


def test_consumers_ride_out_a_broker_restart(tmp_path, settings):
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    broker.start()
    broker.wait_ready()
    try:
        settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
        ensure_topics(admin_client(), declared_topics())
        services = Services(tmp_path / "home", broker.bootstrap_servers)
        stream = OrderStream(broker.bootstrap_servers, seed=3)
        try:
            consumers = [services.start("consume_stats"), services.start("consume_deliveries")]
            stream.produce(3_000)
            broker.stop()  # while the consumers are reading
            time.sleep(5)
            broker.start()
            broker.wait_ready()
            stream.produce(3_000)

            expected = stream.truth.as_result()
            deadline = time.monotonic() + 90
            while (results := services.results()) != expected:
                assert time.monotonic() < deadline, f"consumers did not recover: {results['orders']} orders"
                time.sleep(1)
            for process in consumers:
                assert process.poll() is None, "a consumer died instead of waiting for the broker"
                assert services.stop(process) == 0
        finally:
            services.close()
    finally:
        broker.stop()


def test_copies_split_the_partitions_and_one_beyond_the_partition_count_sits_idle(kafka, services):
    copies = [services.start("consume_stats") for _ in range(kafka.partitions + 1)]

    def last_assignments() -> list[str | None]:
        found = []
        for process in copies:
            lines = re.findall(r" assigned (.*)$", services.log_files[process.pid].read_text(), re.MULTILINE)
            found.append(lines[-1] if lines else None)
        return found

    deadline = time.monotonic() + 60
    while True:  # until every copy has joined and the group is stable
        before = last_assignments()
        time.sleep(3)
        if None not in before and before == last_assignments():
            break
        assert time.monotonic() < deadline, f"group never settled: {before}"

    assignments = last_assignments()
    assert assignments.count("nothing") == 1
    for assignment in assignments:
        if assignment != "nothing":
            # Range assignment: each busy copy has one partition number of both topics.
            [orders, payments] = sorted(assignment.split(", "))
            assert orders.split("orders")[1] == payments.split("payments")[1]
    for process in copies:
        assert services.stop(process) == 0
