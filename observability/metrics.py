"""Prometheus metrics: every definition, and the web process's `/metrics`.

Processes: the consumers, the worker and the web processes are separate, so their counters
live in prometheus-client's **multiprocess mode**: each process writes its values to files
in `PROMETHEUS_MULTIPROC_DIR` (memory-mapped, no network), and any web process's `/metrics`
adds up the files of all of them. One endpoint and one protection per host, instead of a
port per consumer to open, protect and list in Prometheus. The price: the processes must
share that directory (one host, or a shared volume in docker-compose), and the launcher
empties it at start (old counters would otherwise be summed in).

What Kafka and the database know is read at scrape time instead, by the web process: the
consumer groups' lag and positions (eventing.kafka_view, the staff page's Kafka view) and the
outbox's backlog. So a consumer that is down or stuck still shows its lag growing.

The event machinery reports its counts through its metrics hook (eventing.hooks), which
settings.EVENTING_METRICS points at `PrometheusMetrics` here; the live sockets through a
signal (live.sockets.socket_opened_or_closed), connected by this package's AppConfig.
"""

from __future__ import annotations

import atexit
import hmac
import ipaddress
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator

from django.conf import settings

if "prometheus_client" in sys.modules and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    # The mode is chosen when the library is imported: too late for this process.
    logging.getLogger(__name__).warning("prometheus_client imported before observability.metrics: single-process mode")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.PROMETHEUS_MULTIPROC_DIR))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async  # noqa: E402
from django.db import connections  # noqa: E402
from django.db.models import Count, Min  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.utils import timezone  # noqa: E402
from django.views.decorators.http import require_safe  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

from eventing.debezium import RelayState, relay_state  # noqa: E402
from eventing.hooks import Tags  # noqa: E402
from eventing.kafka_view import KafkaView, kafka_view  # noqa: E402
from eventing.models import OutboxEvent  # noqa: E402

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.metrics")


_HOST = socket.gethostname()


def _process_id() -> str:
    # The files are named after the process: host and pid, so that containers sharing the
    # directory (each with its own pid 1) do not write the same file. prometheus_client asks
    # at every increment (three per request), to notice a fork: the pid is read each time, the
    # host once (its system call let go of the GIL each time, for the request's thread to wait
    # to take it back).
    return f"{_HOST}-{os.getpid()}"


if values.ValueClass.__name__ == "MmapedValue":
    values.ValueClass = values.MultiProcessValue(_process_id)
    # A stopped web process's open websockets must not count any more.
    atexit.register(lambda: multiprocess.mark_process_dead(_process_id()))

# -- consumers (eventing.runner, through eventing.hooks) ---------------------------------------------------

CONSUMER_EVENTS = Counter(
    "foodsite_consumer_events",
    "Events read by a consumer group, by what became of them: applied to its projection, "
    "skipped (not for this service), dead_lettered.",
    ["group", "outcome"],
)
CONSUMER_RETRIES = Counter(
    "foodsite_consumer_retries",
    "Batches retried after a transient error (database busy, broker unreachable).",
    ["group"],
)
CONSUMER_BATCH_SECONDS = Histogram(
    "foodsite_consumer_batch_duration_seconds",
    "Time to decode, apply and commit one batch (its database transaction included).",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# -- producers (eventing.producer, eventing.outbox) -------------------------------

PRODUCER_DELIVERY_FAILURES = Counter(
    "foodsite_producer_delivery_failures",
    "Events Kafka did not acknowledge (the outbox relay sends them again), by topic and error.",
    ["topic", "error"],
)

# -- web ---------------------------------------------------------------------------------

HTTP_REQUEST_SECONDS = Histogram(
    "foodsite_http_request_duration_seconds",
    "Web requests, by view (the URL's route name, never the raw path), method and status.",
    ["view", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBSOCKETS_OPEN = Gauge(
    "foodsite_websocket_connections",
    "Live pages' websockets open, by page.",
    ["page"],
    multiprocess_mode="livesum",  # the open ones of the web processes running now
)


class RequestMetricsMiddleware:
    """Times every request into HTTP_REQUEST_SECONDS, labelled by route name. Async and sync
    capable, so on daphne it adds no thread switch."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self._async:
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        self._observe(request, response, time.perf_counter() - started)
        return response

    async def _acall(self, request: HttpRequest):
        started = time.perf_counter()
        response = await self.get_response(request)
        self._observe(request, response, time.perf_counter() - started)
        return response

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
        match = getattr(request, "resolver_match", None)
        if match is not None:
            view = match.view_name or "unnamed"
        elif request.path.startswith(f"/{settings.STATIC_URL.lstrip('/')}"):
            view = "static"
        else:
            view = "unmatched"  # a 404 or a redirect before routing: never the raw path
        HTTP_REQUEST_SECONDS.labels(view, request.method, str(response.status_code)).observe(seconds)
        if settings.SERVER_TIMING:
            response["Server-Timing"] = f"app;dur={seconds * 1000:.1f}"
        if seconds * 1000 >= settings.SLOW_REQUEST_MS:
            log.warning(
                "slow request: %s %s (%s) %s in %.0f ms",
                request.method,
                request.path,
                view,
                response.status_code,
                seconds * 1000,
            )


# -- read at scrape time -----------------------------------------------------------------


class OutboxCollector:
    """Outbox rows not yet acknowledged by Kafka, and the age of the oldest: a backlog that
    grows or ages means Kafka is down or the relay does not run."""

    def collect(self):
        if settings.OUTBOX_RELAY == "debezium":
            # Rows are never marked sent there (Debezium reads the WAL): the relay's own state says it.
            yield from relay_families(relay_state())
            return
        unsent = OutboxEvent.objects.filter(sent_at__isnull=True).aggregate(rows=Count("id"), oldest=Min("created_at"))
        age = (timezone.now() - unsent["oldest"]).total_seconds() if unsent["oldest"] else 0.0
        yield GaugeMetricFamily(
            "foodsite_outbox_unsent", "Outbox events not yet acknowledged by Kafka.", unsent["rows"]
        )
        yield GaugeMetricFamily(
            "foodsite_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox event (0: none).", age
        )


def relay_families(relay: RelayState) -> Iterator[GaugeMetricFamily]:
    """The Debezium relay: 1 per connector and task in its state (an alert: != RUNNING), and the
    write-ahead log its replication slot holds back (an alert: growing)."""
    running = GaugeMetricFamily(
        "foodsite_outbox_connector_running", "1 if the outbox connector and all its tasks run.", int(relay.running)
    )
    yield running
    state = GaugeMetricFamily(
        "foodsite_outbox_connector_state",
        "The outbox connector's and each task's state as Kafka Connect says it (UNREACHABLE: no answer).",
        labels=["part", "state"],
    )
    state.add_metric(["connector", relay.connector], 1)
    for number, task in enumerate(relay.tasks):
        state.add_metric([f"task-{number}", task], 1)
    yield state
    if relay.slot_lag_bytes is not None:
        yield GaugeMetricFamily(
            "foodsite_outbox_slot_lag_bytes",
            "Write-ahead log the relay's replication slot has not confirmed (PostgreSQL keeps it).",
            relay.slot_lag_bytes,
        )


class KafkaCollector:
    """Per consumer group and partition: the lag, the position stored in the database (the
    runner's real one), the offset committed to Kafka; per partition its end offset. Read
    from the broker with the staff page's Kafka view, within its 3 s budget."""

    def collect(self):
        yield from kafka_families(kafka_view())


def kafka_families(view: KafkaView) -> Iterator[GaugeMetricFamily]:
    """The Kafka view as metric families; a partition whose offsets are unknown this time
    (offline, or its leader moving) has no sample rather than a made-up one."""
    yield GaugeMetricFamily("foodsite_kafka_up", "1 if the broker answered this scrape.", 0 if view.error else 1)
    if view.error:
        return
    end = GaugeMetricFamily(
        "foodsite_kafka_partition_end_offset", "The offset the next event will get.", labels=["topic", "partition"]
    )
    for topic in view.topics:
        for p in topic.partitions:
            if p.high is not None:
                end.add_metric([topic.name, str(p.partition)], p.high)
    yield end
    # The cluster's health, what an on-call alert is written on (the staff page warns of the same).
    brokers = GaugeMetricFamily("foodsite_kafka_brokers", "Brokers of the cluster, live or down.", labels=["state"])
    brokers.add_metric(["live"], sum(1 for b in view.brokers if b.live))
    brokers.add_metric(["down"], len(view.brokers_down))
    yield brokers
    yield GaugeMetricFamily(
        "foodsite_kafka_under_replicated_partitions",
        "The system's partitions with fewer in-sync replicas than replicas.",
        len(view.under_replicated),
    )
    yield GaugeMetricFamily(
        "foodsite_kafka_offline_partitions", "The system's partitions without a leader.", len(view.offline)
    )
    labels = ["group", "topic", "partition"]
    lag = GaugeMetricFamily(
        "foodsite_consumer_lag",
        "Events of a partition the group has not applied yet (end offset minus its database position).",
        labels=labels,
    )
    position = GaugeMetricFamily(
        "foodsite_consumer_position",
        "The group's next offset as stored in its database transaction.",
        labels=labels,
    )
    committed = GaugeMetricFamily(
        "foodsite_consumer_committed_offset",
        "The group's offset committed to Kafka (trails the database's by up to one batch).",
        labels=labels,
    )
    for group in view.groups:
        for p in group.partitions:
            key = [group.name, p.topic, str(p.partition)]
            if p.stored_lag is not None:
                lag.add_metric(key, p.stored_lag)
            if p.stored is not None:
                position.add_metric(key, p.stored)
            if p.committed is not None:
                committed.add_metric(key, p.committed)
    yield lag
    yield position
    yield committed


def exposition() -> bytes:
    """The text every process's metrics add up to, plus what is read at scrape time."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(OutboxCollector())
    registry.register(KafkaCollector())
    try:
        return generate_latest(registry)
    finally:
        connections.close_all()  # this scrape thread's own connection


def allowed(request: HttpRequest) -> bool:
    """A bearer token equal to METRICS_TOKEN, or a client address in METRICS_ALLOWED_NETWORKS."""
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in _allowed_networks())


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            networks.append(ipaddress.ip_network(network, strict=False))
        except ValueError:
            continue  # observability.checks says so at `check --deploy`; it opens nothing
    return networks


@require_safe  # a scrape is a GET: another method is a 405
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics (Prometheus text format). Async, and collected in a thread of its own: the
    Kafka part can wait seconds when the broker is down, and must not hold the one thread of
    every other page's database work (foodsite.asgi)."""
    if not allowed(request):
        return HttpResponse(
            "Metrics need a bearer token or an allowed address.\n", status=403, content_type="text/plain"
        )
    body = await sync_to_async(exposition, thread_sensitive=False)()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class PrometheusMetrics:
    """The event machinery's metrics hook (eventing.hooks.Metrics, set by
    settings.EVENTING_METRICS): its names and tags onto the families above."""

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        tags = tags or {}
        if name == "consumer.events":
            CONSUMER_EVENTS.labels(tags["group"], tags["outcome"]).inc(value)
        elif name == "consumer.retries":
            CONSUMER_RETRIES.labels(tags["group"]).inc(value)
        elif name == "producer.delivery_failures":
            PRODUCER_DELIVERY_FAILURES.labels(tags["topic"], tags["error"]).inc(value)

    def timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        if name == "consumer.batch":
            CONSUMER_BATCH_SECONDS.labels((tags or {})["group"]).observe(seconds)


def count_websockets(sender: type, *, page: str, change: int, **_: object) -> None:
    """Receiver of live.sockets.socket_opened_or_closed."""
    WEBSOCKETS_OPEN.labels(page).inc(change)
