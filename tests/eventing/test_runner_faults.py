"""The consumer services as real processes, on a real broker and a real SQLite file, under
kill -9, scale-out and scale-in, a broker restart, and poison events. Each test compares
the final projections with the ground truth of what was produced: nothing missing, nothing
counted twice."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kafka_node import LocalKafka
from eventing.topics import admin_client, declared_topics, ensure_topics, group_name
from harness.kafka_support import KafkaTestBed
from harness.processes import Services
from harness.streams import OrderStream

pytestmark = pytest.mark.system


@pytest.fixture
def services(kafka: KafkaTestBed, tmp_path: Path, process_database_url: str | None) -> Iterator[Services]:
    services = Services(tmp_path, kafka.bootstrap_servers, process_database_url)
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


# On PostgreSQL too: the offsets' fencing between real processes writing at once.
@pytest.mark.db_write
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


# On PostgreSQL too: the offsets' fencing between real processes writing at once.
@pytest.mark.db_write
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


def test_consumers_ride_out_a_broker_restart(tmp_path, settings, process_database_url):
    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    broker.wait_ready()
    try:
        settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
        ensure_topics(admin_client(), declared_topics())
        services = Services(tmp_path / "home", broker.bootstrap_servers, process_database_url)
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
            # Range assignment: each busy copy has one partition number of every topic: orders,
            # payments and the group's re-drive topic (so a re-driven event meets its order).
            [orders, payments, redrive] = sorted(assignment.split(", "))
            assert orders.split("orders")[1] == payments.split("payments")[1] == redrive.split("stats.redrive")[1]
    for process in copies:
        assert services.stop(process) == 0
