"""Web benchmark: order placement against the trivial view on the same server, closed loop
(N clients, each waiting for its answer) and open loop (orders at a fixed rate), on SQLite
and on PostgreSQL, with Kafka up and down, one or more daphne processes; and the capacity at a
latency bound: the highest fixed rate whose p99 stays under it, found by stepping the rate.

    .venv/bin/python bench/web_bench.py [--databases sqlite,postgres] [--kafka up,down]
        [--processes 1] [--threads default] [--clients 32] [--seconds 8] [--rounds 3]
        [--rate 150] [--open-seconds 8] [--capacity] [--capacity-seconds 10] [--bound-ms 50]
        [--no-durable] [--json results.json]

Starts its own stack: a local broker, a SQLite file and/or a local PostgreSQL server
(devstack.postgres_server, durable unless --no-durable), the demo menu, and for each variant
its daphne process(es) in production settings (DEBUG off, collected static files, plain HTTP
on loopback). Several processes share one listening socket (`daphne --fd`), as a pre-forking
server would. "Kafka down" is a web process whose broker address refuses connections: the
order goes through the outbox only. The variants (database x kafka x processes x threads)
are run in turn, round after round (a, b, c, a, b, c, ...), so a change of load on the
machine hits them all alike; each round measures the trivial view then the orders with the
same fresh server, and the ratio is taken within the round. Reported: the median over the
rounds and its spread (min-max).

Closed loop: wrk (Debian's `wrk`, a C client), N connections. Open loop: vegeta (Go, `make
bench` installs it into .local/bin) at --rate orders a second for --open-seconds; its
latencies are not bound by the client count (no coordinated omission). Each order is a POST
of a one-dish order with its own idempotency key and a valid CSRF token and cookie, and must
be answered with the redirect to its order page; the trivial view is `/healthz`. Anything
else, or a failed connection, is an error.

Capacity (--capacity): on the round's fresh server, after a warm-up of 3 s at half the first
rate (not counted), open-loop steps of --capacity-seconds each, from --capacity-from orders a
second up by --capacity-step until a step does not hold, then halving the gap between the
highest step that held and the lowest that did not down to --capacity-resolution. A step
holds when every order got its redirect, vegeta sent at the rate asked (within 5%: a client
that fell behind measured a lower rate) and the p99 stayed under --bound-ms. The round's
figure is the highest rate that held (0 if none did). --seconds 0 skips the closed loop,
--rate 0 the fixed-rate open loop.

A variant may set the web's environment: `postgres:up:1::OUTBOX_RELAY=debezium` is the web with
the Debezium relay (it writes the outbox row only). Then a Kafka Connect worker
(devstack.kafka_connect) runs for the whole bench with the connector registered, reading a
database of those variants' own (bench_debezium): a direct-publish variant writing to the
database Connect reads would have each event published twice. The worker's CPU is metered as
`connect`. For every variant with Kafka up, the bench reads `orders` (committed events, as a
consumer would) from where it ended before the variant, and reports whether every order the
database took is there once (lost, doubled) and how long after the load the last one arrived.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import requests
from confluent_kafka import Consumer, TopicPartition

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from devstack.kafka_connect import LocalConnect  # noqa: E402
from devstack.kafka_node import LocalKafka, free_port  # noqa: E402
from devstack.launcher import wait_http  # noqa: E402
from devstack.postgres_server import LocalPostgres  # noqa: E402

VEGETA = BASE_DIR / ".local" / "bin" / "vegeta"

# wrk's Lua side: one request shape per view, every answer checked, percentiles out as JSON.
WRK_SCRIPT = """
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  wrong = 0
end
function request()
  if KIND == "trivial" then return wrk.format("GET", "/healthz") end
  counter = counter + 1
  local body = BODY .. string.format("&idempotency_key=%s-%d-%d", RUN, tid, counter)
  return wrk.format("POST", "/", HEADERS, body)
end
function response(status, headers, body)
  if status ~= EXPECTED then wrong = wrong + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("wrong") end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %f, "p50": %f, "p95": %f, "p99": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, bad + e.connect + e.read + e.write + e.timeout))
end
"""


def order_form(url: str) -> tuple[str, str]:
    """The urlencoded body (without idempotency key) and cookie a browser would send: a CSRF
    token and a dish of the menu."""
    session = requests.Session()
    menu = session.get(url, timeout=10).text
    dish = re.search(r'name="qty-(\d+)"', menu).group(1)
    fields = {
        "csrfmiddlewaretoken": re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', menu).group(1),
        "customer_name": "Bench",
        "address": "Via Roma 1",
        f"qty-{dish}": "1",
    }
    body = "&".join(f"{key}={quote(value)}" for key, value in fields.items())
    return body, f"csrftoken={session.cookies['csrftoken']}"


def closed_loop(url: str, kind: str, clients: int, seconds: float) -> dict:
    """wrk: `clients` connections, each sending its next request when the answer came."""
    body, cookie = order_form(url)
    script = (
        f"KIND = {json.dumps(kind)}\nEXPECTED = {200 if kind == 'trivial' else 302}\n"
        f"RUN = {json.dumps(uuid.uuid4().hex[:12])}\nBODY = {json.dumps(body)}\n"
        f'HEADERS = {{["Content-Type"] = "application/x-www-form-urlencoded", ["Cookie"] = {json.dumps(cookie)}}}\n'
        + WRK_SCRIPT
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        output = subprocess.run(
            ["wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", lua.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    result = json.loads(output.split("RESULT ", 1)[1])
    return {**result, "rps": result["requests"] / result["seconds"]}


def open_loop(url: str, rate: int, seconds: float) -> dict:
    """vegeta: `rate` orders a second whatever the answers' pace, each with its own key."""
    body, cookie = order_form(url)
    run = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory() as scratch:
        targets = Path(scratch) / "targets.json"
        headers = {"Content-Type": ["application/x-www-form-urlencoded"], "Cookie": [cookie]}
        with targets.open("w") as out:
            for n in range(int(rate * seconds) + rate):
                payload = f"{body}&idempotency_key={run}-{n}".encode()
                target = {"method": "POST", "url": f"{url}/", "header": headers}
                out.write(json.dumps({**target, "body": base64.b64encode(payload).decode()}) + "\n")
        results = Path(scratch) / "results.bin"
        subprocess.run(
            [VEGETA, "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/1s", f"-duration={seconds:g}s",
             "-timeout=10s", "-redirects=-1", f"-output={results}"],
            check=True, capture_output=True,
        )  # fmt: skip
        report = json.loads(
            subprocess.run([VEGETA, "report", "-type=json", str(results)], check=True, capture_output=True).stdout
        )
        hops = hops_of(results)
    latencies = report["latencies"]
    errors = sum(n for code, n in report["status_codes"].items() if code != "302")
    return {
        "requests": report["requests"],
        "rate": report["rate"],
        "rps": report["throughput"],
        "p50": latencies["50th"] / 1e6,
        "p95": latencies["95th"] / 1e6,
        "p99": latencies["99th"] / 1e6,
        "max": latencies["max"] / 1e6,
        "errors": errors,
        **({"hops": hops} if hops else {}),
    }


HOPS = ("to the handler", "in the handler, before the view", "the view", "back to the client")


def hops_of(results: Path) -> dict | None:
    """Where the requests' time went, from the Server-Timing headers of a web with
    SERVER_TIMING=1 (--hops): from vegeta's send to the ASGI handler's start (the kernel, daphne
    parsing, the event loop), in the handler before the view (waiting for a sync thread, the
    body, the middleware above the metrics'), the view (the middleware below, the order's
    work and its database), and the rest (the answer through daphne back to vegeta). Means
    over the requests around the median (45th-55th percentile) and over the slowest 1%, in ms;
    None if the answers carry no such header."""
    encoded = subprocess.run([VEGETA, "encode", "--to", "json", str(results)], check=True, capture_output=True)
    rows = []
    for line in encoded.stdout.splitlines():
        result = json.loads(line)
        timings = dict(
            (part.split(";")[0], part) for value in (result.get("headers") or {}).get("Server-Timing", []) for part in
            value.split(",")
        )  # fmt: skip
        if "handler" not in timings or "app" not in timings:
            continue
        handler = re.search(r'dur=([\d.]+);desc="([\d.]+)"', timings["handler"])
        app = float(re.search(r"dur=([\d.]+)", timings["app"]).group(1))
        sent = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", result["timestamp"])).timestamp()
        latency = result["latency"] / 1e6
        to_handler = (float(handler.group(2)) - sent) * 1000
        in_handler = float(handler.group(1))
        rows.append((latency, (to_handler, in_handler - app, app, latency - to_handler - in_handler)))
    if not rows:
        return None
    rows.sort()

    def means(part: list) -> dict:
        return {hop: statistics.fmean(r[1][n] for r in part) for n, hop in enumerate(HOPS)}

    middle = rows[int(0.45 * len(rows)) : max(int(0.55 * len(rows)), int(0.45 * len(rows)) + 1)]
    slowest = rows[int(0.99 * len(rows)) :]
    return {"median": means(middle), "slowest_1pct": means(slowest), "slowest_1pct_latency": rows[-len(slowest)][0]}


def hops_text(step: dict) -> str:
    hops = step.get("hops")
    if not hops:
        return ""
    return (
        "; "
        + ", ".join(
            f"{which} " + " / ".join(f"{hops[which][hop]:.1f}" for hop in HOPS) for which in ("median", "slowest_1pct")
        )
        + " ms (to handler / waiting in it / view / back)"
    )


HELD_RATE_SHARE = 0.95  # vegeta must have sent at least this share of the rate asked
WARM_UP_SECONDS = 3.0


def step_held(step: dict, rate: int, bound_ms: float) -> tuple[bool, str]:
    """Whether an open-loop step at `rate` held the bound, and if not why."""
    if step["errors"]:
        return False, f"{step['errors']} errors"
    if step["rate"] < HELD_RATE_SHARE * rate:
        return False, f"the client sent {step['rate']:.0f}/s"
    if step["p99"] >= bound_ms:
        return False, f"p99 {step['p99']:.1f} ms"
    return True, ""


def find_capacity(
    measure: Callable[[int], tuple[bool, dict]], start: int, step: int, resolution: int, maximum: int
) -> tuple[int, list[dict]]:
    """The highest rate `measure` says held, stepping up from `start` by `step` until one does
    not hold (or `maximum`), then bisecting between the last that held and the first that did
    not (or 0 and `start`) until they are `resolution` apart. `measure(rate)` -> (held, figures).
    Returns that rate (0: none held) and every step's figures, in the order measured."""
    steps: list[dict] = []

    def held(rate: int) -> bool:
        ok, figures = measure(rate)
        steps.append({**figures, "target": rate, "held": ok})
        return ok

    passed, failed, rate = 0, None, start
    while rate <= maximum:
        if not held(rate):
            failed = rate
            break
        passed, rate = rate, rate + step
    while failed is not None and failed - passed > resolution:
        middle = passed + max(resolution, (failed - passed) // 2 // resolution * resolution)
        if middle >= failed:
            break
        if held(middle):
            passed = middle
        else:
            failed = middle
    return passed, steps


class Web:
    """`processes` daphne processes on one listening socket, with `env`."""

    def __init__(self, env: dict, processes: int, tree: Path = BASE_DIR) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.listener.set_inheritable(True)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        fd = self.listener.fileno()
        # Its output (LOG_LEVEL=WARNING: errors only), quoted if it does not start.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "daphne", "--fd", str(fd), "foodsite.asgi:application"],
                cwd=tree,
                env=env,
                pass_fds=[fd],
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            for _ in range(processes)
        ]
        try:
            wait_http(f"{self.url}/healthz", timeout=90)
        except TimeoutError as exc:
            self.log.seek(0)
            output = self.log.read()[-3000:].decode(errors="replace")
            self.stop()
            raise RuntimeError(f"{exc}; its output:\n{output}") from None
        for _ in range(10 * processes):  # a first request for each process (imports, connections)
            requests.get(f"{self.url}/", timeout=30)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.listener.close()
        self.log.close()


class TopicTally:
    """What reached the `orders` topic while one variant ran, as a consumer would read it
    (committed events only), from where the topic ended before the variant: each order's first
    arrival and every second copy. The relay's share of the figures: the direct publish after
    the web's commit, or Debezium reading the WAL, is what puts them there."""

    def __init__(self, bootstrap: str, database_url: str) -> None:
        self.database_url = database_url
        self.orders_before = count_orders(database_url)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"web-bench-tally-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        partitions = self.consumer.list_topics("orders", timeout=10).topics["orders"].partitions
        ends = [self.consumer.get_watermark_offsets(TopicPartition("orders", p), timeout=10)[1] for p in partitions]
        self.consumer.assign([TopicPartition("orders", p, end) for p, end in zip(partitions, ends, strict=True)])
        self.arrived: dict[bytes, float] = {}
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self.consumer.consume(1000, 0.2):
                if message.error() is None:
                    self.messages += 1
                    self.arrived.setdefault(message.key(), time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.consumer.close()

    def settle(self, load_ended: float, timeout: float = 120) -> dict:
        """Once the web has stopped: wait until every order its database took is on the topic
        (or `timeout`), then 2 s more for late second copies."""
        taken = count_orders(self.database_url) - self.orders_before
        deadline = time.monotonic() + timeout
        while len(self.arrived) < taken and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        self.close()
        last = max(self.arrived.values(), default=load_ended)
        return {
            "orders": taken,
            "on_topic": len(self.arrived),
            "second_copies": self.messages - len(self.arrived),
            "behind_s": round(max(0.0, last - load_ended), 2),
        }


def database_of(variant: dict) -> str:
    """The variant's database. A Debezium variant has one of its own, the one whose outbox the
    connector reads: a direct-publish variant writing there would have each event published
    twice, by its web and by Connect."""
    return "postgres-debezium" if variant["env"].get("OUTBOX_RELAY") == "debezium" else variant["database"]


def count_orders(database_url: str) -> int:
    """Orders in the variant's database: what the web took (each writes one `order.placed`)."""
    if database_url.startswith("sqlite:///"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
            return conn.execute("SELECT count(*) FROM orders_order").fetchone()[0]
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM orders_order").fetchone()[0]


def relay_text(tally: dict) -> str:
    lost = tally["orders"] - tally["on_topic"]
    return (
        f"on the topic {tally['on_topic']}/{tally['orders']} (lost {lost}, doubled {tally['second_copies']}), "
        f"the last {tally['behind_s']:.1f} s after the load"
    )


def manage(env: dict, *step: str) -> None:
    subprocess.run([sys.executable, "manage.py", *step], cwd=BASE_DIR, env=env, check=True, capture_output=True)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--kafka", default="up,down", help="comma-separated: up, down")
    parser.add_argument("--processes", default="1", help="comma-separated daphne process counts, e.g. 1,2")
    parser.add_argument(
        "--threads", default="default", help="comma-separated WEB_SYNC_THREADS values (default: the setting)"
    )
    parser.add_argument(
        "--variants",
        help="instead of the cross product above: comma-separated database:kafka:processes[:threads[:NAME=VALUE...]] "
        "(the web processes' environment), e.g. sqlite:up:1,postgres:up:2,postgres:up:1:4:KAFKA_LINGER_MS=5",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="a checkout (e.g. `git archive main | tar -x -C DIR`) whose web runs each variant too, alternated",
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8, help="per closed-loop measurement (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=150, help="open loop: orders a second (0: no open loop)")
    parser.add_argument("--open-seconds", type=float, default=8)
    parser.add_argument(
        "--capacity", action="store_true", help="also find the highest rate whose p99 stays under --bound-ms"
    )
    parser.add_argument("--capacity-from", type=int, default=100, help="the first step's orders a second")
    parser.add_argument("--capacity-step", type=int, default=50, help="orders a second added per step up")
    parser.add_argument("--capacity-resolution", type=int, default=25, help="bisect until this close")
    parser.add_argument("--capacity-max", type=int, default=1000)
    parser.add_argument("--capacity-seconds", type=float, default=10, help="per step (the issue's bound: 30)")
    parser.add_argument("--bound-ms", type=float, default=50, help="the p99 a step must stay under")
    parser.add_argument(
        "--hops",
        action="store_true",
        help="web processes with SERVER_TIMING=1: each open loop splits its median and slowest 1%% by hop",
    )
    parser.add_argument("--no-durable", dest="durable", action="store_false", help="PostgreSQL with fsync off")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    # SIGTERM as Ctrl-C: the servers it started (broker, PostgreSQL, daphne) are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.seconds and not shutil.which("wrk"):
        sys.exit("web_bench: wrk not found (apt-get install wrk; `make bench` does)")
    if (args.rate or args.capacity) and not VEGETA.exists():
        sys.exit(f"web_bench: {VEGETA} not found (`make bench` installs it; or --rate 0)")
    if args.variants:
        variants = []
        for spec in args.variants.split(","):
            db, kafka, processes, threads, *settings = [*spec.split(":"), "default"][: max(4, spec.count(":") + 1)]
            extra = dict(setting.split("=", 1) for setting in settings)
            variants.append(
                {
                    "database": db,
                    "kafka": kafka,
                    "processes": int(processes),
                    "threads": threads or "default",
                    "env": extra,
                }
            )
    else:
        variants = [
            {"database": db, "kafka": kafka, "processes": int(processes), "threads": threads, "env": {}}
            for db in args.databases.split(",")
            for kafka in args.kafka.split(",")
            for processes in args.processes.split(",")
            for threads in args.threads.split(",")
        ]
    for variant in variants:
        variant["tree"] = ""
    variants += [{**v, "tree": str(tree)} for tree in args.baseline for v in variants]
    databases = list(dict.fromkeys(database_of(v) for v in variants))

    home = Path(tempfile.mkdtemp(prefix="foodsite-webbench-"))
    home.chmod(0o755)  # PostgreSQL's user must get through it, as root
    broker = LocalKafka(home / "kafka")
    postgres = None
    base_env = {
        **os.environ,
        "FOODSITE_HOME": str(home),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # Production settings, over plain HTTP on loopback.
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "DJANGO_STATIC_ROOT": str(home / "static"),
        "DEMO_PASSWORD": uuid.uuid4().hex,
        **({"SERVER_TIMING": "1"} if args.hops else {}),
    }
    database_urls = {"sqlite": f"sqlite:///{home / 'bench.sqlite3'}"}
    # A variant with OUTBOX_RELAY=debezium: one Connect worker for the whole run, relaying the
    # outbox of that variant's database (idle, but running, while the other variants are measured).
    debezium = "postgres-debezium" in databases
    if debezium and any(v["database"] != "postgres" for v in variants if database_of(v) == "postgres-debezium"):
        sys.exit("web_bench: OUTBOX_RELAY=debezium needs the postgres database")
    connect = None
    load_before = load_average()
    try:
        broker.start()
        if {"postgres", "postgres-debezium"} & set(databases):
            postgres = LocalPostgres(home / "pg", durable=args.durable)
            postgres.start()
            postgres.wait_ready()
            database_urls["postgres"] = postgres.create_database("bench")
            database_urls["postgres-debezium"] = postgres.create_database("bench_debezium")
        broker.wait_ready()
        base_env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers  # its port moves if it was taken
        if debezium:
            connect = LocalConnect(home / "connect", broker.bootstrap_servers)
            connect.start()  # its JVM starts while the database is migrated
            base_env["CONNECT_URL"] = connect.url
        manage(base_env, "collectstatic", "--noinput")
        manage({**base_env, "DATABASE_URL": database_urls[databases[0]]}, "init_kafka")
        for db in databases:
            env = {**base_env, "DATABASE_URL": database_urls[db]}
            manage(env, "migrate", "--noinput")
            manage(env, "seed_demo")
        if connect is not None:
            connect.wait_ready(timeout=180)
            manage({**base_env, "DATABASE_URL": database_urls["postgres-debezium"]}, "register_outbox_connector")
        refused = f"127.0.0.1:{free_port()}"  # nothing listens there: Kafka down for the web
        for variant in variants:
            variant["rounds"] = []
        for round_no in range(args.rounds):
            for variant in variants:
                env = {
                    **base_env,
                    "DATABASE_URL": database_urls[database_of(variant)],
                    "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers if variant["kafka"] == "up" else refused,
                }
                if variant["threads"] != "default":
                    env["WEB_SYNC_THREADS"] = variant["threads"]
                env.update(variant["env"])
                measured: dict = {"load_average": load_average()}
                tally = TopicTally(broker.bootstrap_servers, env["DATABASE_URL"]) if variant["kafka"] == "up" else None
                try:
                    web = Web(env, variant["processes"], Path(variant["tree"]) if variant["tree"] else BASE_DIR)
                except BaseException:
                    if tally is not None:
                        tally.close()
                    raise
                try:
                    if args.seconds:
                        measured["trivial"] = closed_loop(web.url, "trivial", args.clients, args.seconds)
                        measured["order"] = closed_loop(web.url, "order", args.clients, args.seconds)
                        measured["ratio"] = measured["order"]["rps"] / measured["trivial"]["rps"]
                    meter = CpuMeter(
                        [process.pid for process in web.processes],
                        postgres.process.pid if postgres is not None else None,
                        broker.process.pid,
                        connect.process.pid if connect is not None else None,
                    )
                    if args.rate:
                        measured["open"] = metered_open_loop(web.url, args.rate, args.open_seconds, meter)
                    if args.capacity:
                        measured["capacity"] = capacity(web.url, args, meter)
                finally:
                    load_ended = time.monotonic()
                    web.stop()
                if tally is not None:
                    measured["relay"] = tally.settle(load_ended)
                measured["load_average_after"] = load_average()
                variant["rounds"].append(measured)
                print(f"round {round_no + 1}: {label(variant)}: {brief(measured)}", flush=True)
    finally:
        if connect is not None:
            connect.stop()
        broker.stop()
        if postgres is not None:
            postgres.stop()
        if os.environ.get("WEB_BENCH_KEEP"):
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    kinds = [*(["trivial", "order"] if args.seconds else []), *(["open"] if args.rate else [])]
    for variant in variants:
        rounds = variant["rounds"]
        if args.seconds:
            variant["ratio"] = summary([r["ratio"] for r in rounds])
        for kind in kinds:
            for figure in ("rps", "p50", "p95", "p99", *(["max"] if kind == "open" else [])):
                variant[f"{kind}_{figure}"] = summary([r[kind][figure] for r in rounds])
            variant[f"{kind}_errors"] = sum(r[kind]["errors"] for r in rounds)
        if args.capacity:
            variant["capacity"] = summary([r["capacity"]["rate"] for r in rounds])
            variant["capacity_per_round"] = [r["capacity"]["rate"] for r in rounds]
        if variant["kafka"] == "up":
            tallies = [r["relay"] for r in rounds]
            variant["relay"] = {
                "orders": sum(t["orders"] for t in tallies),
                "lost": sum(t["orders"] - t["on_topic"] for t in tallies),
                "second_copies": sum(t["second_copies"] for t in tallies),
                "behind_s": summary([t["behind_s"] for t in tallies]),
            }
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rate": args.rate,
        "open_seconds": args.open_seconds,
        "capacity": (
            {
                "from": args.capacity_from,
                "step": args.capacity_step,
                "resolution": args.capacity_resolution,
                "seconds": args.capacity_seconds,
                "bound_ms": args.bound_ms,
            }
            if args.capacity
            else None
        ),
        "postgres_durable": args.durable,
        "load_average": [load_before, load_average()],
        "cpus": os.cpu_count(),
        "variants": variants,
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


class CpuMeter:
    """CPU seconds used by each part of the bench's stack, and by the rest of the machine, from
    /proc: the web processes, PostgreSQL (the postmaster and every backend), the Kafka broker,
    the Kafka Connect worker if there is one, the load generator (this script's finished
    children: vegeta) and this script; `others` is what the machine's CPUs did besides (other
    users of a shared machine)."""

    def __init__(self, web: list[int], postgres: int | None, kafka: int, connect: int | None = None) -> None:
        self.web, self.postgres, self.kafka, self.connect = web, postgres, kafka, connect

    def read(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # ended meanwhile
                # ppid, then utime, stime, cutime, cstime (children it waited for)
                stats[int(entry.name)] = (int(fields[1]), *(int(f) / tick for f in fields[11:15]))

        def tree(pid: int | None) -> float:
            if pid is None or pid not in stats:
                return 0.0
            own = sum(stats[pid][1:5])
            return own + sum(sum(s[1:3]) for child, s in stats.items() if s[0] == pid)

        client = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = sum(int(v) for n, v in enumerate(cpu[:8]) if n not in (3, 4)) / tick  # all but idle, iowait
        figures = {
            "web": sum(tree(pid) for pid in self.web),
            "postgres": tree(self.postgres),
            "kafka": tree(self.kafka),
            "connect": tree(self.connect),
            "client": client.ru_utime + client.ru_stime,
            "bench": me.ru_utime + me.ru_stime,
        }
        return {**figures, "others": busy - sum(figures.values()), "machine": busy}


def metered_open_loop(url: str, rate: int, seconds: float, meter: CpuMeter) -> dict:
    """open_loop, with the CPU each part of the stack spent per order meanwhile, and the cores
    the rest of the machine used."""
    before, started = meter.read(), time.monotonic()
    step = open_loop(url, rate, seconds)
    after, elapsed = meter.read(), time.monotonic() - started
    cpu_ms = {role: 1000 * (after[role] - before[role]) / max(step["requests"], 1) for role in before}
    return {**step, "cpu_ms_per_order": cpu_ms, "others_cores": (after["others"] - before["others"]) / elapsed}


def cpu_text(step: dict) -> str:
    cpu = step["cpu_ms_per_order"]
    return (
        f"CPU ms per order: web {cpu['web']:.2f}, postgres {cpu['postgres']:.2f}, kafka {cpu['kafka']:.2f}, "
        + (f"connect {cpu['connect']:.2f}, " if cpu.get("connect") else "")
        + f"client {cpu['client']:.2f}; the rest of the machine {step['others_cores']:.2f} cores"
    )


def capacity(url: str, args: argparse.Namespace, meter: CpuMeter) -> dict:
    """The round's capacity search on the server at `url` (find_capacity), each step printed
    with the CPU each part of the stack spent per order, and the cores the rest of the machine
    used meanwhile."""

    def measure(rate: int) -> tuple[bool, dict]:
        load = load_average()
        step = metered_open_loop(url, rate, args.capacity_seconds, meter)
        held, why = step_held(step, rate, args.bound_ms)
        print(
            f"  step {rate}/s: p50 {step['p50']:.1f} p99 {step['p99']:.1f} max {step['max']:.0f} ms, "
            f"sent {step['rate']:.0f}/s, {step['errors']} errors: {'held' if held else 'not held, ' + why}; "
            f"{cpu_text(step)}{hops_text(step)} (load average {load:.1f})",
            flush=True,
        )
        time.sleep(1)  # the producer's and the outbox's tail of the step, before the next one
        return held, {**step, "load_average": load, "why": why}

    # Not counted: a server's first orders pay for what it sets up once (the producer's
    # connection to Kafka, the first statements on each connection, the allocator's arenas).
    open_loop(url, max(10, args.capacity_from // 2), WARM_UP_SECONDS)
    rate, steps = find_capacity(
        measure, args.capacity_from, args.capacity_step, args.capacity_resolution, args.capacity_max
    )
    return {"rate": rate, "steps": steps}


def label(variant: dict) -> str:
    threads = "" if variant["threads"] == "default" else f", {variant['threads']} threads"
    processes = "1 daphne" if variant["processes"] == 1 else f"{variant['processes']} daphnes"
    tree = f" [{Path(variant['tree']).name}]" if variant["tree"] else ""
    tree += "".join(f", {name}={value}" for name, value in variant["env"].items())
    return f"{variant['database']}, kafka {variant['kafka']}, {processes}{threads}{tree}"


def brief(measured: dict) -> str:
    parts = []
    if "ratio" in measured:
        parts.append(
            f"trivial {measured['trivial']['rps']:.0f} req/s, orders {measured['order']['rps']:.0f} req/s "
            f"(p99 {measured['order']['p99']:.0f} ms) = {measured['ratio']:.2f}"
        )
    if "open" in measured:
        o = measured["open"]
        parts.append(
            f"open loop {o['rate']:.0f}/s: p50 {o['p50']:.1f} p99 {o['p99']:.1f} max {o['max']:.0f} ms, {cpu_text(o)}"
            + hops_text(o)
        )
    if "capacity" in measured:
        parts.append(f"capacity {measured['capacity']['rate']} orders/s")
    if "relay" in measured:
        parts.append(relay_text(measured["relay"]))
    errors = sum(measured[kind]["errors"] for kind in ("trivial", "order", "open") if kind in measured)
    load = f" (load average {measured['load_average']:.1f} -> {measured['load_average_after']:.1f})"
    return "; ".join(parts) + (f", {errors} errors" if errors else "") + load


def print_report(report: dict) -> None:
    durable = "durable" if report["postgres_durable"] else "fsync off"
    print(f"command: {report['command']}")
    print(
        f"{report['clients']} closed-loop clients (wrk), {report['seconds']:g} s each; open loop (vegeta) "
        f"{report['rate']} orders/s for {report['open_seconds']:g} s; {report['rounds']} rounds alternating the "
        f"variants; PostgreSQL {durable}; DEBUG off; load average {report['load_average'][0]:.1f} -> "
        f"{report['load_average'][1]:.1f} on {report['cpus']} CPUs"
    )
    if report["seconds"]:
        print_closed_loop(report)
    if report["capacity"]:
        print_capacity(report)


def print_capacity(report: dict) -> None:
    c = report["capacity"]
    print(
        f"capacity: the highest rate whose p99 stayed under {c['bound_ms']:g} ms for {c['seconds']:g} s, "
        f"from {c['from']} orders/s up by {c['step']}, to within {c['resolution']}"
    )
    print(f"{'variant':<42}{'orders/s median (min-max)':>27}  per round (load average)")
    for v in report["variants"]:
        rounds = ", ".join(f"{r['capacity']['rate']} ({r['load_average']:.1f})" for r in v["rounds"])
        median = f"{v['capacity']['median']:.0f} ({v['capacity']['min']:.0f}-{v['capacity']['max']:.0f})"
        print(f"{label(v):<42}{median:>27}  {rounds}")


def print_closed_loop(report: dict) -> None:
    print(
        f"{'variant':<42}{'trivial/s':>10}{'orders/s':>9}{'ratio (min-max)':>18}{'p99 ms':>8}"
        f"{'open p50':>10}{'p99':>9}{'max':>8}{'errors':>7}"
    )
    for v in report["variants"]:
        r = v["ratio"]
        line = (
            f"{label(v):<42}{v['trivial_rps']['median']:>10.0f}{v['order_rps']['median']:>9.0f}"
            f"{r['median']:>8.2f} ({r['min']:.2f}-{r['max']:.2f}){v['order_p99']['median']:>8.0f}"
        )
        errors = v["trivial_errors"] + v["order_errors"]
        if "open_p99" in v:
            line += f"{v['open_p50']['median']:>10.1f}{v['open_p99']['median']:>9.1f}{v['open_max']['median']:>8.0f}"
            errors += v["open_errors"]
        else:
            line += f"{'':>27}"
        print(line + f"{errors:>7}")


if __name__ == "__main__":
    main()
