"""Live latency: from an answer to the row or status a person sees on an open page.

    .venv/bin/python bench/live_latency.py [--orders 30] [--load 100] [--production]
        [--profile cluster [--relay celery|debezium] [--no-registry] [--settle 20]] [--json results.json]

Starts the run command's stack (`python -m devstack.launcher`: its own broker, SQLite, daphne,
every consumer, the worker) and a real headless Chromium (Debian's, as tests/browser.py starts
it) with the courier's page and a customer's order page open, each stamped by a
MutationObserver (Date.now(), the same wall clock as this script's time.time()). Two paths:

- pay: the payment's answer (HTTP 302) -> the order's row among the open deliveries of the
  courier's page (light load only: under load the page shows the oldest open ones, and a
  new order is not among them);
- claim: the courier's claim answer -> the row among the courier's own deliveries;
- step: the courier's pick-up or delivered answer -> the new status on the customer's page.

Two loads, one after the other on the same stack: light (one measured order a second,
nothing else) and loaded (the same measured orders while a background producer writes
`--load` orders a second straight to Kafka, as the web's outbox would: placed, paid, then
claimed, picked up and delivered by another courier 1 s later), with `--backlog` open
deliveries nobody claims written first (1,000: the courier page lists the oldest 20 and
their count). Measured orders go through the real web (requests over HTTP, as the tests'
http_client does). Each path is split at its live-updates notice, read by this script too: answer -> notice
announced (the consumer applied and committed the event), announced -> shown (Kafka, the
web's bridge, the page read for the socket, websocket, DOM), and that again at the page's
websocket message (stamped in the browser).

`--profile cluster` runs the launcher's cluster profile instead (three brokers, PostgreSQL, Redis,
the schema registry, two copies of every process) with the outbox relay `--relay` names: the
Debezium relay (its default: a Kafka Connect worker reads the outbox from the WAL) or `celery`
(the web publishes each event itself after the commit). `make bench` runs it both ways with
`--load 0`, so pay -> courier row compares the two relays. The report also has the launcher's
start-up time and the memory (PSS and RSS) of every process it started, by part, once ready and
after the orders.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from devstack.kafka_node import free_port  # noqa: E402
from harness.http_client import logged_in, order_and_pay  # noqa: E402

OBSERVE_ROWS = """() => { window.__rows = {};
  const stamp = () => { for (const row of document.querySelectorAll('tr[data-order-id]'))
      window.__rows[row.dataset.orderId] ??= Date.now(); };
  new MutationObserver(stamp).observe(document.body, {subtree: true, childList: true}); }"""
OBSERVE_MINE = """() => { window.__mine = {};
  const mine = "[data-live-list='my-deliveries'] > tr[data-order-id]";
  const stamp = () => { for (const row of document.querySelectorAll(mine))
      window.__mine[row.dataset.orderId] ??= Date.now(); };
  new MutationObserver(stamp).observe(document.body, {subtree: true, childList: true}); }"""
OBSERVE_STATUS = """() => { window.__status = {};
  const stamp = () => { const s = document.getElementById('order-status');
      if (s) window.__status[s.textContent.trim()] ??= Date.now(); };
  stamp();
  new MutationObserver(stamp).observe(document.body, {subtree: true, childList: true, characterData: true}); }"""


# Stamps, in every page of a context, when a websocket message arrives: announced -> shown
# split into the trip to the browser and what the page does then.
STAMP_HOPS = """window.__hops = {ws: []};
  const NativeSocket = window.WebSocket;
  window.WebSocket = class extends NativeSocket {
    constructor(...args) { super(...args);
      this.addEventListener('message', () => window.__hops.ws.push(Date.now())); } };"""


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports free now (the launcher takes PORT and the next)."""
    while True:
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


class Stack:
    """The launcher's stack in a fresh home; stopped (whole process group) on exit.
    `production`: DEBUG off (static files collected, a secret key), over plain HTTP on
    loopback as bench/web_bench.py runs it; else `make run`'s settings (DEBUG on)."""

    def __init__(
        self, production: bool = False, profile: str = "embedded", relay: str = "", registry: bool = True
    ) -> None:
        """`relay` (cluster profile): the OUTBOX_RELAY the launcher is given (default its own:
        debezium); `registry` False: the cluster without its schema registry."""
        self.production = production
        self.profile = profile
        self.relay = relay
        self.registry = registry
        self.home = Path(tempfile.mkdtemp(prefix="foodsite-live-"))
        self.home.chmod(0o755)  # the cluster's PostgreSQL runs as its own user, which must enter it
        self.port = free_ports(2)
        self.kafka_port = free_ports(3)
        self.postgres_port, self.redis_port = free_port(), free_port()
        self.registry_port, self.connect_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The web processes: one, or the cluster profile's two (PORT and PORT+1).
        self.urls = [self.url] if profile == "embedded" else [self.url, f"http://127.0.0.1:{self.port + 1}"]
        brokers = 1 if profile == "embedded" else 3
        self.bootstrap = ",".join(f"127.0.0.1:{self.kafka_port + n}" for n in range(brokers))
        self.log = self.home / "launcher.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "FOODSITE_HOME": str(self.home),
            "PORT": str(self.port),
            "KAFKA_PORT": str(self.kafka_port),
            "FOODSITE_PROFILE": self.profile,
            "POSTGRES_PORT": str(self.postgres_port),
            "REDIS_PORT": str(self.redis_port),
            "SCHEMA_REGISTRY_PORT": str(self.registry_port),
            "CONNECT_PORT": str(self.connect_port),
        }
        if self.relay:
            env["OUTBOX_RELAY"] = self.relay
        own = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "CELERY_BROKER_URL", "CONNECT_URL", "SCHEMA_REGISTRY_URL")
        for name in own:
            env.pop(name, None)  # the launcher starts its own
        if not self.registry:
            env["SCHEMA_REGISTRY_URL"] = ""  # the launcher's word for none
        if self.profile == "cluster":
            from devstack.postgres_server import LocalPostgres

            env["DATABASE_URL"] = LocalPostgres(self.home / "cluster" / "postgres", port=self.postgres_port).url()
        if self.production:
            env.update(
                DJANGO_DEBUG="0",
                DJANGO_SECRET_KEY=uuid.uuid4().hex * 2,
                DJANGO_SECURE_SSL_REDIRECT="0",
                DJANGO_SECURE_COOKIES="0",
                DJANGO_STATIC_ROOT=str(self.home / "static"),
                DEMO_PASSWORD="foodsite-demo",
            )
            subprocess.run(
                [sys.executable, "manage.py", "collectstatic", "--noinput"],
                cwd=BASE_DIR, env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        self.env = dict(env)
        if self.profile == "cluster":
            env.pop("DATABASE_URL")  # the launcher starts the server and creates the database; we only read it
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devstack.launcher"],
                cwd=BASE_DIR,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 240
        while "| ready in" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"launcher did not get ready:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)

    def ready_in(self) -> float | None:
        """The launcher's own figure: from its start to every process up and set up."""
        found = re.search(r"\| ready in ([\d.]+) s", self.log.read_text(errors="replace"))
        return float(found.group(1)) if found else None

    def memory(self) -> dict:
        """The memory of the launcher and everything it started (its process tree), by part:
        PSS (a shared page counted once, split among its users: PostgreSQL's backends share
        its buffers) and RSS, in MB."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        tree, grew = {self.process.pid}, True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in tree} - tree
            tree |= more
            grew = bool(more)
        parts: dict[str, dict[str, float]] = defaultdict(lambda: {"processes": 0, "pss_mb": 0.0, "rss_mb": 0.0})
        for pid in tree:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue  # gone meanwhile
            kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.endswith("kB")}
            part = parts[process_part(command)]
            part["processes"] += 1
            part["pss_mb"] += kb.get("Pss", 0) / 1024
            part["rss_mb"] += kb.get("Rss", 0) / 1024
        total = {key: sum(p[key] for p in parts.values()) for key in ("processes", "pss_mb", "rss_mb")}
        rounded = {name: {k: round(v, 1) for k, v in p.items()} for name, p in sorted(parts.items())}
        return {**{k: round(v, 1) for k, v in total.items()}, "parts": rounded}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # the launcher stops its children, Kafka last
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


PARTS = (  # a process of the stack, by what its command line says it is
    ("ConnectDistributed", "Kafka Connect"),
    ("kafka.Kafka", "Kafka"),
    ("apicurio", "schema registry"),
    ("postgres", "PostgreSQL"),
    ("redis-server", "Redis"),
    ("daphne", "web"),
    ("celery", "Celery"),
    ("manage.py", "consumers"),
)


def process_part(command: str) -> str:
    return next((part for marker, part in PARTS if marker in command), "launcher and others")


class Notices:
    """Reads the live-updates topic from its end, as a web process's bridge does, and keeps
    (announced at, read at) per stream."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.seen: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from eventing.topics import topic_name
        from live.notices import LIVE_UPDATES, read_notice

        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "bench-live", "enable.auto.commit": False}
        )
        topic = topic_name(LIVE_UPDATES)
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
        self._ready.set()
        while not self._stopping.is_set():
            for message in consumer.consume(1, 0.2):
                if message.error() is None and message.key():
                    read_at = time.time()
                    with self._lock:
                        announced, _ = read_notice(message.value())
                        self.seen[message.key().decode()].append((announced, read_at))
        consumer.close()

    def first_after(self, stream: str, moment: float) -> tuple[float, float] | None:
        with self._lock:
            return next(((at, read) for at, read in self.seen.get(stream, []) if at >= moment), None)


class EventWriter:
    """A thread writing events straight into Kafka (JSON, as the outbox publishes them) until
    stopped; subclasses say which (`_run`)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        self._producer.flush(30)

    def _publish(self, payload: object) -> None:
        from contract.events import Event
        from eventing.topics import topic_name

        event = Event(payload)
        self._producer.produce(topic_name(payload.TOPIC), key=event.key.encode(), value=event.to_json())


class BackgroundLoad(EventWriter):
    """`rate` orders a second, each claimed, picked up and delivered by courier `bench-load`
    1 s after its payment (`steps=False`: left open)."""

    def __init__(self, bootstrap: str, rate: int, steps: bool = True) -> None:
        super().__init__(bootstrap)
        self.rate = rate
        self.steps = steps
        self.sent = 0

    def _run(self) -> None:
        from contract.events import (
            DeliveryClaimed,
            DeliveryDelivered,
            DeliveryPickedUp,
            OrderLine,
            OrderPlaced,
            PaymentSucceeded,
        )

        pending: list[tuple[float, str]] = []  # (steps due at, order id)
        started = time.monotonic()
        while not self._stopping.is_set():
            due = started + self.sent / self.rate
            now = time.monotonic()
            if now < due:
                time.sleep(min(due - now, 0.01))
                continue
            order_id = str(uuid.uuid4())
            line = OrderLine(1, "Margherita", random.randint(1, 3), Decimal("8.50"), Decimal("2.10"))
            total = line.unit_price * line.quantity
            self._publish(OrderPlaced(order_id, "Load", "Via Carico 1", [line], total))
            self._publish(PaymentSucceeded(order_id, total, "4242"))
            if self.steps:
                pending.append((now + 1, order_id))
            while pending and pending[0][0] <= now:
                _, done = pending.pop(0)
                for step in (DeliveryClaimed, DeliveryPickedUp, DeliveryDelivered):
                    self._publish(step(order_id=done, courier="bench-load"))
            self.sent += 1
            self._producer.poll(0)


def percentiles(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {}
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 1),
        "p95": round(p95, 1),
        "max": round(ms[-1], 1),
        "ms": [round(v, 1) for v in ms],
    }


def record_hops(
    hops: dict[str, list[float]],
    path: str,
    notice: tuple[float, float] | None,
    answered: float,
    shown: float,
    page_stamps: dict[str, list[float]],
) -> None:
    """Split answer -> shown at the notice: the consumer's part (applied, committed, announced:
    exact, the notice carries its time) and the rest, split again by the page's own stamps
    (STAMP_HOPS): to the websocket message (Kafka, the web's bridge, the page read for that
    socket: live.sockets), then the DOM swap. This script's own read of the notice shows Kafka's
    share; it shares the process with the browser driver, so it may read later than the web did."""
    if notice is None or notice[0] > shown:
        return  # no notice of this stream after the answer: the row came with an earlier one
    announced, read = notice
    hops[f"{path}: answer -> announced"].append(announced - answered)
    hops[f"{path}: announced -> shown"].append(shown - announced)
    hops[f"{path}: (announced -> read by this script)"].append(read - announced)
    message = next((t for t in page_stamps["ws"] if announced <= t <= shown), None)
    if message is None:
        return
    hops[f"{path}:   announced -> websocket message"].append(message - announced)
    hops[f"{path}:   message -> shown"].append(shown - message)


def page_stamps(page) -> dict[str, list[float]]:
    stamps = page.evaluate("window.__hops")
    return {"ws": [t / 1000 for t in stamps["ws"]]}


def measure(stack: Stack, browser, notices: Notices, orders: int, interval: float, pay_row: bool) -> dict:
    """`orders` measured orders, one every `interval` s: pay -> open row on the courier page
    (when `pay_row`: the page can show a new order), claim -> the courier's own row, steps ->
    customer status."""
    courier_session = logged_in(stack.url, "courier")
    customer_session = requests.Session()
    courier_context = browser.new_context()
    courier_context.add_init_script(STAMP_HOPS)
    courier_page = courier_context.new_page()
    courier_page.goto(f"{stack.url}/accounts/login/")
    courier_page.get_by_label("Username").fill("courier")
    courier_page.get_by_label("Password").fill("foodsite-demo")
    courier_page.get_by_role("button", name="Log in").click()
    courier_page.goto(f"{stack.url}/courier/")
    courier_page.wait_for_selector("body[data-live='open']", state="attached")
    courier_page.evaluate(OBSERVE_ROWS)
    courier_page.evaluate(OBSERVE_MINE)
    customer_context = browser.new_context()
    customer_context.add_init_script(STAMP_HOPS)
    customer_page = customer_context.new_page()

    def courier_step(order_id: str, name: str, refused_until: float = 0) -> float:
        """Post the step; the time of its 302. Until `refused_until` a 409 is retried: the
        delivery service may not have the paid order yet (no page shows it to wait for)."""
        while True:
            answer = courier_session.post(
                f"{stack.url}/courier/{order_id}/{name}/",
                data={"csrfmiddlewaretoken": courier_session.cookies.get("csrftoken")},
                headers={"Referer": f"{stack.url}/courier/"},
                allow_redirects=False,
                timeout=60,
            )
            if answer.status_code == 302:
                return time.time()
            if answer.status_code != 409 or time.monotonic() > refused_until:
                raise RuntimeError(f"courier step {name} answered {answer.status_code}: {answer.text[:300]}")
            time.sleep(0.02)

    pay, claim, step = [], [], []
    hops: dict[str, list[float]] = defaultdict(list)
    for _ in range(orders):
        began = time.monotonic()
        order_id = order_and_pay(customer_session, stack.url)
        paid_at = time.time()
        if pay_row:
            seen = courier_page.wait_for_function(f"window.__rows['{order_id}']", timeout=60_000).json_value() / 1000
            pay.append(seen - paid_at)
            record_hops(hops, "pay", notices.first_after("courier", paid_at), paid_at, seen, page_stamps(courier_page))

        claimed_at = courier_step(order_id, "claim", refused_until=time.monotonic() + 60)
        seen = courier_page.wait_for_function(f"window.__mine['{order_id}']", timeout=60_000).json_value() / 1000
        claim.append(seen - claimed_at)
        notice = notices.first_after("courier", claimed_at)
        record_hops(hops, "claim", notice, claimed_at, seen, page_stamps(courier_page))

        # The customer's orders are in a signed cookie: the browser gets the session's.
        cookies = [{"name": c.name, "value": c.value, "url": stack.url} for c in customer_session.cookies]
        customer_page.context.add_cookies(cookies)
        customer_page.goto(f"{stack.url}/orders/{order_id}/")
        customer_page.wait_for_selector("body[data-live='open']", state="attached")
        customer_page.evaluate(OBSERVE_STATUS)
        for name, status in (("pick-up", "Out for delivery"), ("deliver", "Delivered")):
            answered_at = courier_step(order_id, name)
            shown = customer_page.wait_for_function(f"window.__status['{status}']", timeout=60_000).json_value() / 1000
            step.append(shown - answered_at)
            notice = notices.first_after(f"order.{order_id}", answered_at)
            record_hops(hops, "step", notice, answered_at, shown, page_stamps(customer_page))
            if name == "pick-up":  # the projection must have it before the next step: the row says so
                row = f"document.querySelector('tr[data-order-id=\"{order_id}\"] .status')"
                courier_page.wait_for_function(f"{row}?.textContent.includes('Out for delivery')", timeout=60_000)
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    courier_page.context.close()
    customer_page.context.close()
    return {
        "pay": percentiles(pay),
        "claim": percentiles(claim),
        "step": percentiles(step),
        "hops": {k: percentiles(v) for k, v in hops.items()},
    }


def write_backlog(bootstrap: str, count: int) -> None:
    """`count` paid orders nobody claims, straight into Kafka, and wait until the delivery
    service lists them: the courier page's open deliveries under load."""
    from deliveries.models import Delivery

    backlog = BackgroundLoad(bootstrap, rate=10_000, steps=False)
    backlog.start()
    while backlog.sent < count:
        time.sleep(0.05)
    backlog.stop()
    deadline = time.monotonic() + 120
    while Delivery.objects.filter(status=Delivery.Status.TO_DELIVER, paid_at__isnull=False).count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the delivery service did not list the {count} open deliveries")
        time.sleep(0.5)


def bench(
    orders: int,
    load: int,
    backlog: int,
    production: bool = False,
    profile: str = "embedded",
    relay: str = "",
    settle: float = 0,
    registry: bool = True,
) -> dict:
    """Both loads on one stack; the figures as a dict (printed by main, collected by `make bench`)."""
    from playwright.sync_api import sync_playwright

    from harness.browser import launch_chromium

    stack = Stack(production, profile, relay, registry)
    stack.start()
    memory_at_ready = stack.memory()
    time.sleep(settle)  # the start's own work (JVMs compiling, consumers joining) out of the figures
    bootstrap = stack.bootstrap
    os.environ.update(
        {**stack.env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DJANGO_SETTINGS_MODULE": "foodsite.settings"}
    )
    # Playwright's sync API runs an event loop in this thread: Django's ORM (the backlog's
    # count) refuses to run there unless told this script knows it waits.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    notices = Notices(bootstrap)
    notices.start()
    report: dict = {
        "orders": orders,
        "load": load,
        "backlog": backlog,
        "production": production,
        "profile": profile,
        "relay": stack.env.get("OUTBOX_RELAY") or ("debezium" if profile == "cluster" else "celery"),
        "ready_s": stack.ready_in(),
        "settle_s": settle,
        "registry": registry,
        "memory_at_ready": memory_at_ready,
    }
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            report["light"] = measure(stack, browser, notices, orders, interval=1.0, pay_row=True)
            report["memory_after_light"] = stack.memory()
            print_phase(report, "light")
            if not load:  # --load 0: the light phase only
                browser.close()
                return report
            write_backlog(bootstrap, backlog)
            background = BackgroundLoad(bootstrap, load)
            loaded_from = time.monotonic()
            background.start()
            time.sleep(3)  # the load's steady state: its first deliveries are being worked
            report["loaded"] = measure(stack, browser, notices, orders, interval=0.0, pay_row=not backlog)
            background.stop()
            # What the producer really kept up (the machine is shared): the load to quote.
            report["loaded"]["background_rate"] = round(background.sent / (time.monotonic() - loaded_from), 1)
            print_phase(report, "loaded")
            browser.close()
    finally:
        notices.stop()
        stack.stop()
        report["load_average"] = os.getloadavg()
    return report


def print_phase(report: dict, load: str) -> None:
    title = "1 order/s" if load == "light" else f"+{report['loaded'].get('background_rate', report['load'])} orders/s"
    rows = [
        ("pay -> row on the courier page", report[load]["pay"]),
        ("claim -> own row on the courier page", report[load]["claim"]),
        ("step -> status on the customer page", report[load]["step"]),
    ]
    rows += [(f"  {name}", figures) for name, figures in report[load]["hops"].items()]
    for name, figures in rows:
        if figures:
            label = f"{title}: {name}"
            print(f"{label:<52}{figures['n']:>5}{figures['p50']:>9.0f}{figures['p95']:>9.0f}{figures['max']:>9.0f}")
    sys.stdout.flush()


def print_report(report: dict) -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print("settings: " + ("production (DEBUG off)" if report.get("production") else "make run's (DEBUG on)"))
    registry = "" if report["registry"] else ", no schema registry"
    print(f"profile: {report['profile']}{registry}, outbox relay {report['relay']}, ready in {report['ready_s']} s")
    for moment in ("memory_at_ready", "memory_after_light"):
        m = report.get(moment)
        if m:
            parts = ", ".join(f"{name} {p['pss_mb']:.0f}" for name, p in m["parts"].items())
            total = f"PSS {m['pss_mb']:.0f} MB (RSS {m['rss_mb']:.0f}), {m['processes']:.0f} processes"
            print(f"{moment.replace('_', ' ')}: {total}; {parts}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in report['load_average'])}")
    print(f"{'':<52}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for load in ("light", "loaded"):
        if load in report:
            print_phase(report, load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=30, help="measured orders per load")
    parser.add_argument(
        "--load", type=int, default=100, help="background orders a second in the loaded phase (0: no loaded phase)"
    )
    parser.add_argument(
        "--backlog", type=int, default=1000, help="open deliveries nobody claims, written before the loaded phase"
    )
    parser.add_argument("--production", action="store_true", help="DEBUG off (default: make run's settings)")
    parser.add_argument(
        "--profile", choices=("embedded", "cluster"), default="embedded", help="the launcher's FOODSITE_PROFILE"
    )
    parser.add_argument(
        "--relay", choices=("celery", "debezium"), help="the cluster's OUTBOX_RELAY (default: the launcher's, debezium)"
    )
    parser.add_argument(
        "--no-registry", dest="registry", action="store_false", help="the cluster without its schema registry"
    )
    parser.add_argument("--settle", type=float, default=0, help="seconds to wait once the stack is ready")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.relay and args.profile != "cluster":
        parser.error("--relay: the cluster profile's (the embedded one runs on SQLite: the Celery relay)")
    report = bench(
        args.orders,
        args.load,
        args.backlog,
        args.production,
        args.profile,
        args.relay or "",
        args.settle,
        args.registry,
    )
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
