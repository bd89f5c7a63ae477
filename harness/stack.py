"""The production shape as real processes, for the failover tests and bench/failover_bench.py.

Given a Kafka cluster's bootstrap servers, a DATABASE_URL and a Celery broker URL: migrate,
create the topics (with the replication of `KAFKA_REPLICATION_FACTOR`), seed the demo menu,
then two daphne web processes in production settings on free ports, two copies of each
consumer service asked for, the Celery worker and beat (the outbox relay every second).
Processes can be killed with kill -9 (their whole process group) and started again.

What the tests read back: the projections' totals (through the apps' own selectors, in a
`manage.py shell`), the web's own records of placed and paid orders (the truth the
projections must equal), the events on the topics (by id), and cheap polls straight from the
database (consumer positions, unsent outbox rows) while waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from devstack.launcher import wait_http
from eventing.projection import decode_message
from harness.kafka_support import watermarks
from harness.processes import Services

# Which topics each consumer service reads (its Projection's topics).
GROUP_TOPICS = {
    "stats": ("orders", "payments"),
    "deliveries": ("orders", "payments", "delivery-status"),
    "notifications": ("orders", "payments", "delivery-status"),
}
# What eventing.outbox logs each time it hands an event to a producer: the web after its
# commit ("stored", unless its producer's queue was full), a relay pass ("relaying").
STORED = re.compile(r" stored \S+ for \S+ \(event ([0-9a-f-]{36})\)")
QUEUE_FULL = re.compile(r"producer queue full; ([0-9a-f-]{36}) left to the outbox relay")
RELAYING = re.compile(r" relaying \S+ for \S+ \(event ([0-9a-f-]{36})")
COMMANDS = {"stats": "consume_stats", "deliveries": "consume_deliveries", "notifications": "consume_notifications"}
# The CPU priority of the services that are not the web (see start_consumers).
BACKGROUND_NICE = 10

RESULTS = """
import json
from django.db.models import Sum
from deliveries.models import Delivery
from eventing.models import OutboxEvent
from orders.models import Order
from stats.selectors import sales_totals
paid = Order.objects.filter(status=Order.Status.PAID)
paid_ids = {str(i) for i in paid.values_list("id", flat=True)}
delivered = {str(i) for i in Delivery.objects.filter(paid_at__isnull=False).values_list("order_id", flat=True)}
t = sales_totals()
print(json.dumps({
    "placed": Order.objects.count(),
    "paid": len(paid_ids),
    "paid_revenue": str(paid.aggregate(s=Sum("total"))["s"] or 0),
    "paid_ids": sorted(paid_ids),
    "stats_orders": t.orders,
    "stats_revenue": str(t.revenue),
    "deliveries": Delivery.objects.count(),
    "deliveries_paid_missing": len(paid_ids - delivered),
    "deliveries_paid_unknown": len(delivered - paid_ids),
    "outbox_unsent": OutboxEvent.objects.filter(sent_at__isnull=True).count(),
}))
"""


@dataclass
class Tally:
    """What the web recorded (its orders table, the truth), against what the topics carry and
    what the projections counted; and the orders the customers were told are paid."""

    placed: int
    paid: int
    paid_revenue: Decimal
    stats_orders: int
    stats_revenue: Decimal
    deliveries: int
    deliveries_missing: int  # paid orders without a paid delivery
    deliveries_unknown: int  # paid deliveries of no paid order
    placed_events: int  # distinct order.placed event ids on the topic
    payment_events: int  # distinct payment event ids on the topic
    on_topics_twice: int  # messages beyond the first of an event id (the projections count one)
    customers_paid: int
    customers_paid_missing: int  # answered "paid", yet not paid in the database or not on both topics
    outbox_unsent: int

    @property
    def lost(self) -> int:
        return self.customers_paid_missing + max(0, self.paid - self.stats_orders) + self.deliveries_missing

    @property
    def doubled(self) -> int:
        return max(0, self.stats_orders - self.paid) + self.deliveries_unknown + max(0, self.deliveries - self.placed)

    def describe(self) -> str:
        return (
            f"web: {self.placed} orders placed, {self.paid} paid (revenue {self.paid_revenue}); topics: "
            f"{self.placed_events} order.placed, {self.payment_events} payments ({self.on_topics_twice} messages "
            f"were a second copy); stats: {self.stats_orders} orders, revenue {self.stats_revenue}; deliveries: "
            f"{self.deliveries}; lost = {self.lost}, doubled = {self.doubled}"
        )


def machine_load() -> str:
    """The load average and the share of the last minute some task waited for a CPU (Linux PSI)."""
    one, five, _ = os.getloadavg()
    try:
        waiting = Path("/proc/pressure/cpu").read_text().split()[2].removeprefix("avg60=") + "%"
    except (OSError, IndexError):
        waiting = "unknown"
    return f"machine: load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs, CPU pressure {waiting}"


def cpu_pressure() -> float:
    """The share (%) of the last 10 s some task waited for a CPU (Linux PSI); 0 if unknown."""
    try:
        return float(Path("/proc/pressure/cpu").read_text().split()[1].removeprefix("avg10="))
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll until `check()` is true; returns the seconds it took. Always bounded.

    A check that asks Kafka may find no answer this time (a metadata request timing out while
    brokers restart and the machine is busy): that is "not yet", tried again until the bound,
    whose message then names the last such error. Failover test 1 ended at once on one."""
    started = time.monotonic()
    unanswered: KafkaException | None = None
    while True:
        try:
            if check():
                return time.monotonic() - started
        except KafkaException as exc:
            unanswered = exc
        if time.monotonic() - started > timeout:
            last = f"; the last unanswered request: {unanswered}" if unanswered is not None else ""
            raise AssertionError(f"{what} (after {timeout:g} s{last})")
        time.sleep(every)


@dataclass(frozen=True)
class HandOffs:
    """How many times an event was handed to a Kafka producer (each a separate produce(): the
    idempotent producer de-duplicates its own retries of one, not two of them)."""

    by_web: int  # after its commit, by the web process that stored it
    by_relay: int  # by relay passes

    @property
    def total(self) -> int:
        return self.by_web + self.by_relay


class Stack(Services):
    """One deployment (its own topics, groups, database) on a shared cluster."""

    def __init__(
        self,
        home: Path,
        bootstrap_servers: str,
        *,
        database_url: str | None = None,
        celery_broker_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.prefix = f"failover-{uuid.uuid4().hex[:8]}-"
        self.bootstrap_servers = bootstrap_servers
        self.database_url = database_url or f"sqlite:///{self.home / 'db.sqlite3'}"
        production = {
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "KAFKA_GROUP_PREFIX": self.prefix,
            # Production settings over plain HTTP on loopback, as bench/web_bench.py runs them.
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "DJANGO_STATIC_ROOT": str(self.home / "static"),
            "DEMO_PASSWORD": "foodsite-demo",
            # The relay looks every second (its threshold stays the producer's timeout + 5 s).
            "OUTBOX_RELAY_EVERY_S": "1",
            # Each answer says how long the view and the web process's handler took, so that
            # a slow request's time can be split (harness.load: inside Django, in the web
            # process around it, or outside: daphne, the kernel, the client).
            "SERVER_TIMING": "1",
            **({"CELERY_BROKER_URL": celery_broker_url} if celery_broker_url else {}),
        }
        self.urls: list[str] = []
        self.argv: dict[int, tuple[str, list[str], dict | None]] = {}  # pid -> how to start it again
        self.consumers: dict[str, list[subprocess.Popen]] = {}
        self.web: list[subprocess.Popen] = []
        self.worker: subprocess.Popen | None = None
        self.beat: subprocess.Popen | None = None
        self._admin: AdminClient | None = None
        super().__init__(self.home, bootstrap_servers, self.database_url, {**production, **(env or {})})

    # -- start and stop -------------------------------------------------------------------

    def prepare(self) -> None:
        """After the migrate of Services: static files, topics, the demo menu and users."""
        for step in (("collectstatic", "--noinput"), ("init_kafka",), ("seed_demo",)):
            self.manage(*step)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
    ) -> subprocess.Popen:
        """`env`: settings of this process only (e.g. the worker's email backend)."""
        shared = self.env
        self.env = {**shared, **(env or {})}
        try:
            process = super().spawn(name, argv, pass_fds)
        finally:
            self.env = shared
        self.argv[process.pid] = (name, argv, env)
        return process

    def start_web(self, copies: int = 2) -> list[str]:
        """Daphne processes, each on a port of its own, as many as a load balancer would spread over."""
        for _ in range(copies):
            process, url = self.spawn_web()
            self.web.append(process)
            self.urls.append(url)
        for url in self.urls:
            wait_http(f"{url}/healthz", timeout=60)
        return self.urls

    def start_consumers(self, *services: str, copies: int = 2) -> None:
        """`copies` processes of each service (group members sharing its partitions), below the
        web in CPU priority like the brokers (tests/conftest.py kafka_cluster): on 2 cores they
        would otherwise compete with the answers the tests time."""
        for service in services:
            argv = ["nice", "-n", str(BACKGROUND_NICE), self.python, "manage.py", COMMANDS[service]]
            self.consumers.setdefault(service, []).extend(self.spawn(service, argv) for _ in range(copies))

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """The Celery worker, as the Procfile runs it (a pool of 2 threads)."""
        argv = ["nice", "-n", str(BACKGROUND_NICE), self.python, "-m", "celery", "-A", "foodsite", "worker"]
        argv += ["--pool", "threads", "--concurrency", "2"]
        self.worker = self.spawn("worker", [*argv, "-l", "INFO"], env)
        return self.worker

    def start_beat(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Celery beat, once: the outbox relay every second, the notifications' sweep."""
        schedule = self.home / "celerybeat-schedule"
        argv = ["nice", "-n", str(BACKGROUND_NICE), self.python, "-m", "celery", "-A", "foodsite", "beat"]
        argv += ["-l", "INFO", "--schedule", str(schedule)]
        self.beat = self.spawn("beat", argv, env)
        return self.beat

    def kill(self, process: subprocess.Popen) -> None:
        """kill -9 the process and its children (Celery's pool): no goodbye to anyone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def restart(self, process: subprocess.Popen) -> subprocess.Popen:
        """The same command again, as a supervisor would after a crash."""
        name, argv, env = self.argv[process.pid]
        replacement = self.spawn(name, argv, env)
        for copies in (*self.consumers.values(), self.web):
            if process in copies:
                copies[copies.index(process)] = replacement
        if process is self.worker:
            self.worker = replacement
        if process is self.beat:
            self.beat = replacement
        return replacement

    def log(self, process: subprocess.Popen) -> str:
        return self.log_files[process.pid].read_text(errors="replace")

    def wait_consuming(self, timeout: float = 90) -> None:
        """Every consumer copy has joined its group (the runner logs " consuming ")."""
        copies = [p for ps in self.consumers.values() for p in ps]
        wait_for(
            lambda: all(" consuming " in self.log(p) for p in copies), timeout, "consumers never started", every=0.3
        )
        dead = [self.log(p)[-2000:] for p in copies if p.poll() is not None]
        assert not dead, f"a consumer exited: {dead}"

    def wait_settled(self, pressure: float = 30, timeout: float = 45) -> float:
        """The worker and beat started and the cores calm again (CPU pressure over the last
        10 s below `pressure`%, or `timeout` s passed): a Celery worker starting takes most of a
        core for seconds, and a test timing requests must not time that. The seconds waited."""
        started = time.monotonic()
        for process, ready in ((self.worker, " ready."), (self.beat, "beat: Starting")):
            if process is not None:
                wait_for(lambda p=process, r=ready: r in self.log(p), 60, f"{ready!r} never in its log", every=0.3)
        while cpu_pressure() > pressure and time.monotonic() - started < timeout:
            time.sleep(0.5)
        return time.monotonic() - started

    # -- what the tests read back -----------------------------------------------------------

    def slow_requests(self) -> list[str]:
        """The web processes' own "slow request" lines (SLOW_REQUEST_MS): the time inside Django,
        to tell a slow answer from a client or a daphne that waited for a CPU."""
        return [line for web in self.web for line in self.log(web).splitlines() if "slow request" in line]

    def results(self) -> dict:
        return json.loads(self.manage("shell", "-c", RESULTS).strip().splitlines()[-1])

    def tally(self, paid_by_customers: set[str]) -> Tally:
        """Compare, once the consumers have caught up (caught_up)."""
        results = self.results()
        orders, payments = self.events("orders"), self.events("payments")
        told_and_true = set(results["paid_ids"]) & {key for _, key in orders} & {key for _, key in payments}
        placed_events, payment_events = len({i for i, _ in orders}), len({i for i, _ in payments})
        return Tally(
            placed=results["placed"],
            paid=results["paid"],
            paid_revenue=Decimal(results["paid_revenue"]),
            stats_orders=results["stats_orders"],
            stats_revenue=Decimal(results["stats_revenue"]),
            deliveries=results["deliveries"],
            deliveries_missing=results["deliveries_paid_missing"],
            deliveries_unknown=results["deliveries_paid_unknown"],
            placed_events=placed_events,
            payment_events=payment_events,
            on_topics_twice=len(orders) - placed_events + len(payments) - payment_events,
            customers_paid=len(paid_by_customers),
            customers_paid_missing=len(paid_by_customers - told_and_true),
            outbox_unsent=results["outbox_unsent"],
        )

    def hand_offs(self) -> dict[str, HandOffs]:
        """Per event id, from the logs of every web and worker process started so far."""
        by_web: Counter[str] = Counter()
        by_relay: Counter[str] = Counter()
        for path in self.log_files.values():
            text = path.read_text(errors="replace")
            if path.name.startswith("web-"):
                by_web.update(STORED.findall(text))
                by_web.subtract(QUEUE_FULL.findall(text))
            elif path.name.startswith("worker-"):
                by_relay.update(RELAYING.findall(text))
        return {event: HandOffs(by_web[event], by_relay[event]) for event in {*by_web, *by_relay}}

    def second_copies(self) -> int:
        """Messages on orders and payments that repeat an event id already there."""
        return sum(len(found) - len(dict(found)) for found in (self.events("orders"), self.events("payments")))

    def topic(self, logical: str) -> str:
        return f"{self.prefix}{logical}"

    def admin(self) -> AdminClient:
        # One client for the stack's life: the tests poll the cluster's metadata every 0.2 s
        # while a broker is down, and a new client each time (threads, three connections, one
        # refused) costs the CPU the web processes are being timed on.
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        return self._admin

    def events(self, logical: str, timeout: float = 30) -> list[tuple[str, str]]:
        """(event id, order id) of every message on the topic, all partitions, from the start."""
        name = self.topic(logical)
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap_servers, "group.id": f"reader-{uuid.uuid4()}", "log_level": 0}
        )
        try:
            partitions = consumer.list_topics(name, timeout=timeout).topics[name].partitions
            remaining = sum(watermarks(consumer, TopicPartition(name, p), timeout)[1] for p in partitions)
            consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
            found: list[tuple[str, str]] = []
            deadline = time.monotonic() + timeout
            while remaining > 0:
                for message in consumer.consume(1000, 0.2):
                    if message.error() is None:
                        found.append((str(decode_message(message).id), message.key().decode()))
                        remaining -= 1
                assert time.monotonic() < deadline, f"{name}: {remaining} messages not read in {timeout} s"
            return found
        finally:
            consumer.close()

    def end_offsets(self, logical: str, timeout: float = 10) -> dict[int, int]:
        name = self.topic(logical)
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": "unused", "log_level": 0})
        try:
            partitions = consumer.list_topics(name, timeout=timeout).topics[name].partitions
            return {p: watermarks(consumer, TopicPartition(name, p), timeout)[1] for p in partitions}
        finally:
            consumer.close()

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """A read straight from the deployment's database (cheap enough to poll every 0.5 s)."""
        url = urlparse(self.database_url)
        if url.scheme == "sqlite":
            with contextlib.closing(sqlite3.connect(url.path, timeout=20)) as db:
                return db.execute(query.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.database_url.replace("postgres://", "postgresql://", 1)) as db:
            return db.execute(query, params).fetchall()

    def positions(self, service: str) -> dict[tuple[str, int], int]:
        """The group's next offset per (logical topic, partition), as stored with its projection."""
        rows = self.sql(
            'SELECT topic, "partition", next_offset FROM foodsite_consumeroffset WHERE "group" = %s',
            (f"{self.prefix}{service}",),
        )
        return {(topic, partition): offset for topic, partition, offset in rows}

    def caught_up(self, *services: str) -> bool:
        """Each service's projection has applied every event now on its topics."""
        ends = {t: self.end_offsets(t) for t in {t for s in services for t in GROUP_TOPICS[s]}}
        for service in services:
            stored = self.positions(service)
            for topic in GROUP_TOPICS[service]:
                for partition, end in ends[topic].items():
                    if stored.get((topic, partition), 0) < end:
                        return False
        return True

    def outbox_unsent(self) -> int:
        return self.sql("SELECT count(*) FROM foodsite_outboxevent WHERE sent_at IS NULL")[0][0]

    # -- the cluster, as its metadata says ------------------------------------------------------

    def partitions(self, timeout: float = 10) -> list[tuple[str, int, int, list[int], list[int]]]:
        """(topic, partition, leader, replicas, in-sync replicas) of our topics and of the
        consumer offsets' topic (the groups' coordinators); leader -1: none."""
        metadata = self.admin().list_topics(timeout=timeout)
        return [
            (name, p.id, p.leader, list(p.replicas), list(p.isrs))
            for name, topic in sorted(metadata.topics.items())
            if name.startswith(self.prefix) or name == "__consumer_offsets"
            for p in topic.partitions.values()
        ]

    def leaders(self, *logical: str) -> Counter[int]:
        """How many partitions of these topics each broker leads."""
        names = {self.topic(t) for t in logical}
        return Counter(leader for name, _, leader, _, _ in self.partitions() if name in names)

    def under_replicated(self, replicas: int = 3) -> list[str]:
        """The partitions without a leader or with fewer than `replicas` in sync, described."""
        return [
            f"{name}[{partition}] leader {leader} isr {isrs}"
            for name, partition, leader, _, isrs in self.partitions()
            if leader < 0 or len(isrs) < replicas
        ]
