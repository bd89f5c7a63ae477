"""The event machinery's settings: the host project's Django settings, with a default for
each one it leaves out, so that a project installing `eventing` sets only what differs.

Read at each use (not copied at import), so that tests that change settings see the change."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    # Prepended to every topic and group name: several deployments (or tests) on one cluster.
    "KAFKA_TOPIC_PREFIX": "",
    "KAFKA_GROUP_PREFIX": "",
    "KAFKA_PARTITIONS": 3,
    "KAFKA_REPLICATION_FACTOR": 1,
    "KAFKA_RETENTION_MS": 7 * 24 * 3600 * 1000,
    "KAFKA_RETENTION_BYTES": 1024**3,
    "KAFKA_CONSUMER_SESSION_TIMEOUT_MS": 10000,
    "KAFKA_CONSUMER_PREFETCH_KB": 8192,
    # The producer's own settings, on top of the ones every client gets (eventing.clients).
    "KAFKA_PRODUCER": {"acks": "all", "enable.idempotence": True, "delivery.timeout.ms": 10000, "linger.ms": 0},
    "EVENT_FORMAT": "json",
    # A Confluent-compatible schema registry (e.g. Apicurio's /apis/ccompat/v7): with
    # EVENT_FORMAT=avro, events are written in its framing (eventing.schema_registry).
    "SCHEMA_REGISTRY_URL": "",
    # A consumer stops instead of dead-lettering on when more than this share of a window of
    # this many events failed (eventing.dead_letters.DeadLetterLimit).
    "DLQ_MAX_SHARE": 0.5,
    "DLQ_WINDOW": 100,
    "OUTBOX_RELAY_AFTER_S": 15.0,
    # How long a relay pass's claim on the rows it sends holds (eventing.outbox); the relay's
    # producer tries each event for half of it, so that no other pass sends a row in flight.
    "OUTBOX_RELAY_LEASE_S": 60.0,
    # Who sends the outbox's rows: "celery" (the web's producer after the commit, then the relay
    # task for whatever it missed) or "debezium" (Kafka Connect reads the inserts from
    # PostgreSQL's WAL: eventing.debezium; the web only writes the row).
    "OUTBOX_RELAY": "celery",
    # With the Debezium relay: rows older than this are deleted (purge_relayed), and the
    # connector's heartbeat moves its replication slot this often.
    "OUTBOX_KEEP_S": 3600.0,
    "OUTBOX_HEARTBEAT_MS": 10000,
    # Kafka Connect's REST API, where the Debezium relay's connector runs.
    "CONNECT_URL": "",
    # Topics of notices rather than events: name -> retention in ms; one partition each,
    # no dead letters (the project's live pages use one: foodsite.settings).
    "EVENTING_NOTICE_TOPICS": {},
    # The hooks (eventing.hooks): dotted paths, None for the no-op default.
    "EVENTING_METRICS": None,
    "EVENTING_AFTER_COMMIT": None,
}


class _Settings:
    def __getattr__(self, name: str) -> Any:
        if hasattr(django_settings, name):
            return getattr(django_settings, name)
        try:
            return DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"eventing has no setting {name!r}") from None


settings = _Settings()
