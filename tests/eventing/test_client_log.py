"""librdkafka's log lines: a broker outage reads as one WARNING and one INFO per client, and
repeated lines are collapsed into one with a count."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from confluent_kafka import Consumer

from devstack.kafka_node import LocalKafka
from eventing.client_log import KafkaClientLog, client_log_config

FAIL = "[thrd:127.0.0.1:9092/1]: 127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("librdkafka") and r.levelno == level]


def test_repeated_lines_are_written_once_then_once_with_their_count(caplog):
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    log = KafkaClientLog(logging.getLogger("librdkafka.test"), repeat_window=0.2)
    for _ in range(75):
        log.log(logging.WARNING, "%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "Timed out 1 in-flight request")
    assert lines(caplog, logging.WARNING) == ["REQTMOUT: Timed out 1 in-flight request"]
    time.sleep(0.25)
    log.log(logging.INFO, "%s [%s] %s", "OTHER", "rdkafka#producer-1", "something else")
    assert lines(caplog, logging.WARNING)[-1] == "REQTMOUT: Timed out 1 in-flight request (repeated 74 more times)"
    assert lines(caplog, logging.INFO) == ["OTHER: something else"]


def test_one_unreachable_broker_of_several_has_its_own_warning(caplog):
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    log = KafkaClientLog(logging.getLogger("librdkafka.test"))
    for _ in range(40):
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL)
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL.replace("9092", "9093"))
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert warnings[0].startswith("Kafka broker 127.0.0.1:9092 unreachable")
    assert log.unreachable == {"127.0.0.1:9092", "127.0.0.1:9093"}
    # librdkafka's statistics show the first broker up again: only its outage ends.
    log.on_stats('{"brokers": {"127.0.0.1:9092/1": {"state": "UP", "nodeid": 1}, '
                 '"127.0.0.1:9093/2": {"state": "DOWN", "nodeid": 2}}}')  # fmt: skip
    assert log.unreachable == {"127.0.0.1:9093"}
    assert lines(caplog, logging.INFO)[0].startswith("Kafka broker 127.0.0.1:9092 reachable again after")
    assert "39 failed attempts not logged" in lines(caplog, logging.INFO)[0]
    assert not lines(caplog, logging.ERROR)


def test_a_bootstrap_connections_late_failure_after_the_broker_is_back_is_not_a_new_outage(caplog):
    # librdkafka has two connections to one address, the broker's and the bootstrap one; the
    # bootstrap one's last attempt can fail just after the broker is UP again (seen in CI).
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    log = KafkaClientLog(logging.getLogger("librdkafka.test"))
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL)
    log.on_stats('{"brokers": {"127.0.0.1:9092/1": {"state": "UP", "nodeid": 1}, '
                 '"127.0.0.1:9092/bootstrap": {"state": "CONNECT", "nodeid": -1}}}')  # fmt: skip
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL.replace("/1", "/bootstrap"))

    assert len(lines(caplog, logging.WARNING)) == 1
    assert log.unreachable == set()
    # The broker's own connection failing is a new outage, even before the next statistics.
    log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", FAIL)
    assert len(lines(caplog, logging.WARNING)) == 2
    assert log.unreachable == {"127.0.0.1:9092"}


def test_a_real_broker_outage_is_one_warning_and_one_info(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    broker = LocalKafka(tmp_path / "kafka")
    broker.start()
    consumer = None
    try:
        broker.wait_ready()
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": f"quiet-{uuid.uuid4()}",
                "reconnect.backoff.max.ms": 200,  # many attempts during the outage: many lines to fold
                **client_log_config("consumer"),
            }
        )
        consumer.list_topics(timeout=10)

        def poll_for(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                consumer.poll(0.1)

        poll_for(2)
        broker.stop()
        poll_for(6)  # librdkafka retries a few times a second
        assert [w for w in lines(caplog, logging.WARNING) if "unreachable" in w], "the outage was not reported"
        broker.start()
        broker.wait_ready()
        deadline = time.monotonic() + 30
        while not [i for i in lines(caplog, logging.INFO) if "reachable again" in i]:
            assert time.monotonic() < deadline, "the end of the outage was never reported"
            poll_for(0.5)
    finally:
        if consumer is not None:
            consumer.close()
        broker.stop()
    warnings = [w for w in lines(caplog, logging.WARNING) if "unreachable" in w]
    infos = [i for i in lines(caplog, logging.INFO) if "reachable again" in i]
    assert len(warnings) == 1, warnings
    assert len(infos) == 1, infos
    assert not lines(caplog, logging.ERROR), lines(caplog, logging.ERROR)
