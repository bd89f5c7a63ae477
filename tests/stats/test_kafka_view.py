"""The staff page's Kafka view against the real broker: topics' end offsets, each group's
committed offsets, lag and members, and a clear message when Kafka cannot be reached."""

from __future__ import annotations

import re
import time
from html import unescape
from pathlib import Path

import pytest
from django.test import Client

from devstack.kafka_node import free_port
from eventing.topics import group_name
from harness.factories import StaffFactory
from harness.processes import Services
from harness.streams import OrderStream
from harness.web import logged_in
from stats.projection import SalesProjection

pytestmark = pytest.mark.django_db(transaction=True)

ROW = re.compile(r"<\w+ ([^>]*data-topic=[^>]*)>")  # one element per partition
ATTRIBUTE = re.compile(r'data-([a-z-]+)="([^"]*)"')


def kafka_section(page: str) -> str:
    return page.split('<div id="kafka-view"', 1)[1]


def topic_rows(page: str) -> list[dict[str, str]]:
    """The topics table's partitions: {"topic", "partition", "low", "end"}."""
    table = kafka_section(page).split('id="kafka-topics"', 1)[1].split("</table>", 1)[0]
    return [dict(ATTRIBUTE.findall(attributes)) for attributes in ROW.findall(table)]


def group_section(page: str, group: str) -> str:
    match = re.search(rf'<section class="kafka-group" data-group="{re.escape(group)}".*?</section>', page, re.DOTALL)
    assert match, f"no group {group} on the page"
    return match.group(0)


def group_rows(page: str, group: str) -> list[dict[str, str]]:
    return [dict(ATTRIBUTE.findall(attributes)) for attributes in ROW.findall(group_section(page, group))]


def end_offsets(page: str, topics: set[str]) -> int:
    return sum(int(row["end"]) for row in topic_rows(page) if row["topic"] in topics)


def stats_page(staff: Client) -> str:
    response = staff.get("/stats/")
    assert response.status_code == 200
    return unescape(response.content.decode())


def test_end_offsets_add_up_to_what_was_produced_and_lag_follows_the_consumer(kafka):
    staff = logged_in(StaffFactory())
    stream = OrderStream(kafka.bootstrap_servers, seed=3, paid_share=0.5)
    stream.produce(40)
    produced = stream.events_sent

    before = stats_page(staff)
    assert end_offsets(before, {"orders", "payments"}) == produced
    # A group that never ran: nothing committed, every retained event still to read.
    assert {row["topic"] for row in topic_rows(before)} >= {"orders", "payments", "delivery-status", "orders.dlq"}
    assert sum(int(row["lag"]) for row in group_rows(before, "stats")) == produced
    assert "not started" in group_section(before, "stats")

    kafka.drain(SalesProjection())
    caught_up = stats_page(staff)
    rows = group_rows(caught_up, "stats")
    assert {(row["topic"], row["partition"]) for row in rows} == {
        (topic, str(p)) for topic in ("orders", "payments") for p in range(kafka.partitions)
    }
    assert all(row["lag"] == "0" and row["committed"] == row["end"] for row in rows), rows
    assert sum(int(row["committed"]) for row in rows) == produced
    assert 'data-group="stats" data-lag="0"' in caught_up
    # The deliveries service has not run in this test: it still has everything to read.
    assert sum(int(row["lag"]) for row in group_rows(caught_up, "deliveries")) == produced

    stream.produce(5)  # after the consumer stopped
    later = stats_page(staff)
    assert end_offsets(later, {"orders", "payments"}) == stream.events_sent
    assert sum(int(row["lag"]) for row in group_rows(later, "stats")) == stream.events_sent - produced > 0


def test_a_running_consumer_is_listed_with_its_partitions(kafka, tmp_path: Path):
    staff = logged_in(StaffFactory())
    services = Services(tmp_path, kafka.bootstrap_servers)
    try:
        consumer = services.start("consume_stats")
        deadline = time.monotonic() + 60
        while "No member running." in group_section(page := stats_page(staff), "stats"):
            assert consumer.poll() is None, services.log_files[consumer.pid].read_text()
            assert time.monotonic() < deadline, "the consumer never showed as a member"
            time.sleep(0.5)
        stats = group_section(page, "stats")
        client_id = f"{group_name('stats')}-consumer"
        member = re.search(rf'<tr data-client-id="{re.escape(client_id)}">(.*?)</tr>', stats, re.DOTALL)
        assert member, stats
        assert "<td>127.0.0.1</td>" in member.group(1)
        assigned = re.findall(r"(orders|payments)\[(\d)\]", member.group(1))
        assert sorted(assigned) == [(t, str(p)) for t in ("orders", "payments") for p in range(kafka.partitions)]
        rows = group_rows(page, "stats")
        # The group also reads its own re-drive topic (dead letters sent back to it).
        assert {row["topic"] for row in rows} == {"orders", "payments", "stats.redrive"}
        assert [row["owner"] for row in rows] == [client_id] * 3 * kafka.partitions

        assert services.stop(consumer) == 0  # SIGTERM: it leaves the group
        assert "No member running." in group_section(stats_page(staff), "stats")
    finally:
        services.close()


def test_the_page_says_kafka_is_unreachable_and_still_shows_the_numbers(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nobody listens there
    staff = logged_in(StaffFactory())

    started = time.monotonic()
    response = staff.get("/stats/")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    page = response.content.decode()
    message = re.search(r'<p class="kafka-error" role="alert" id="kafka-error">([^<]*)</p>', page)
    assert message, page
    assert message.group(1).startswith("Kafka unreachable: ")
    assert settings.KAFKA_BOOTSTRAP_SERVERS in message.group(1)
    assert '<strong id="stat-orders">0</strong>' in page  # the rest of the page is there
    assert 'id="chart-orders-per-minute"' in page
    assert elapsed < 10, f"the page hung for {elapsed:.1f} s"  # the view's budget is 3 s: no long hang


def test_on_the_cluster_the_page_warns_while_a_broker_is_down_and_clears_once_it_is_back(
    kafka_on_cluster, kafka_cluster
):
    staff = logged_in(StaffFactory())

    def page_when(ready, what: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while not ready(page := stats_page(staff)):
            assert time.monotonic() < deadline, f"{what} within {timeout:g} s:\n{kafka_section(page)[:3000]}"
            time.sleep(0.5)
        return page

    def replicated(page: str) -> bool:
        rows = topic_rows(page)
        return bool(rows) and all(len(row["isr"].split(",")) == 3 for row in rows)

    healthy = stats_page(staff)
    assert replicated(healthy)
    assert all(sorted(row["replicas"].split(",")) == ["1", "2", "3"] for row in topic_rows(healthy))
    assert 'id="kafka-warnings"' not in healthy
    victim = topic_rows(healthy)[0]["leader"]  # the leader of orders[0]

    kafka_cluster.kill(int(victim))
    try:
        # The controller fences the broker once its session expires (broker.session.timeout.ms).
        down = page_when(lambda page: 'data-warning="broker-down"' in page, f"no warning that broker {victim} is down")
        warnings = kafka_section(down).split('id="kafka-warnings"', 1)[1].split("</div>", 1)[0]
        assert f'data-broker="{victim}">Broker {victim} is down' in warnings
        rows = topic_rows(down)
        assert all(victim not in row["isr"].split(",") and row["leader"] != victim for row in rows)
        assert 'data-warning="under-replicated"' in warnings
        assert f"{len(rows)} under-replicated partitions" in warnings  # every partition has a replica there
        assert "orders[0]" in warnings
        assert 'data-warning="offline"' not in warnings  # two replicas left: every partition has a leader
    finally:
        kafka_cluster.start_node(int(victim))
        kafka_cluster.wait_node_ready(int(victim), timeout=120)

    back = page_when(lambda page: replicated(page) and 'id="kafka-warnings"' not in page, "ISR not back to 3")
    assert f'data-broker="{victim}" data-live="yes"' in back
