"""Every Kafka client's configuration, built here and only here.

Each client gets the deployment's brokers and librdkafka's log through Python logging
(eventing.client_log: an outage as one line, not hundreds), then its own settings. The
producers (events, dead letters, re-drives) also get the deployment's producer settings
(KAFKA_PRODUCER: acks, idempotence, delivery timeout...) and Java's partitioner.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka.admin import AdminClient

from eventing.client_log import client_log_config
from eventing.conf import settings

log = logging.getLogger("foodsite.kafka.producer")


def client_config(name: str, *, log_outages: bool = True, **overrides: Any) -> dict[str, Any]:
    """A client's configuration. `name` names its librdkafka logger (`librdkafka.<name>`).
    `log_outages=False` for short-lived clients nobody polls (admin clients): their log goes
    through Python logging as it is, without the statistics that tell when an outage ends."""
    logging_config = client_log_config(name) if log_outages else {"logger": logging.getLogger(f"librdkafka.{name}")}
    return {"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, **logging_config, **overrides}


def producer_config(name: str = "producer", **overrides: Any) -> dict[str, Any]:
    config = client_config(
        name,
        # Java's default partitioner, so a key lands on the same partition whichever client
        # produced it (the Python client's default is CRC32).
        partitioner="murmur2_random",
        **settings.KAFKA_PRODUCER,
    )
    config.update(overrides)
    if str(config.get("acks", "all")) not in {"all", "-1"} and config.get("enable.idempotence"):
        # Idempotence needs acks=all; a deployment that chose acks=0/1 chose speed over it.
        log.warning("acks=%s: turning producer idempotence off", config["acks"])
        config["enable.idempotence"] = False
    return config


def consumer_config(group: str, name: str = "consumer", **overrides: Any) -> dict[str, Any]:
    """A consumer of a group (real name, prefix included) that commits nothing by itself."""
    return client_config(name, **{"group.id": group, "enable.auto.commit": False, **overrides})


def admin_client(**overrides: Any) -> AdminClient:
    return AdminClient(client_config("admin", log_outages=False, **overrides))
