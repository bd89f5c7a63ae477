"""What one order costs on PostgreSQL: round trips to the server, time waiting for it (SQL),
and the rest (Python), per order placed through the web's real request path.

    .venv/bin/python bench/order_cost.py [--orders 2000] [--rounds 3] [--lines 1] [--baseline DIR]
        [--profile] [--no-durable] [--json results.json]

Starts a local broker and a durable local PostgreSQL (as web_bench.py does), migrates a
database per checkout (this one, and each --baseline, e.g. `git archive main | tar -x -C
DIR`) with that checkout's own code, seeds the demo menu, then in a child process per
measurement imports that checkout's `foodsite.asgi.application` (production settings, one
sync thread) and places orders through it one after another, as daphne would hand them over:
a POST of the order form with its CSRF token and cookie and an idempotency key of its own,
each answered with the redirect to its order page (anything else stops the run).

- **Round trips** (once per checkout, Kafka down so that only requests use the database):
  the child's database connection goes through a relay in its own process that counts each
  time the client speaks after the server did, i.e. waits for an answer; per order, after
  50 orders of warm-up. What the outbox's marking costs is not per order (one UPDATE per
  process every 0.25 s at most, eventing.outbox) and is not counted.
- **SQL and Python time** (alternated between checkouts, `--rounds`, Kafka up, a direct
  connection): wall time per order, and of it the time the request's thread spent inside
  psycopg's waits for the server (`psycopg.Connection.wait`: every statement, BEGIN, COMMIT,
  the connection's health check). Python is the rest: Django, the forms, the ORM, encoding
  the event, handing it to the producer, the switch to the request's thread and back.
- **CPU** (the same children): the child process's CPU time per order (all its threads: the
  request's, the event loop's, the producer's) and the PostgreSQL backend's serving its
  connection (/proc): what an order costs the two cores however busy the machine is, where
  wall times grow with the load.
- `--profile`: one more child per checkout with cProfile on the request thread; the top
  functions by own time.

The figures are of one order at a time in a quiet process: what an order costs, not how many
a server takes at once (web_bench.py --capacity measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
WARM_UP = 50  # orders before measuring: the connection, the first statements, the producer


# -- the child: one checkout's web code, in this process ------------------------------------------


def asgi_request(method: str, path: str, body: bytes = b"", cookie: str = "") -> tuple[dict, list, bytes]:
    headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    if method == "POST":
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    return scope, [], body


async def call(application, method: str, path: str, body: bytes = b"", cookie: str = "") -> tuple[int, dict, bytes]:
    """One request through the ASGI application: its status, headers and body."""
    scope, sent, body = asgi_request(method, path, body, cookie)

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await application(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers: dict[str, list[str]] = {}
    for name, value in start["headers"]:
        headers.setdefault(name.decode().lower(), []).append(value.decode())
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class WaitClock:
    """Time and count psycopg's waits for the server on the request threads (foodsite.asgi's
    lanes, named django-<n>): the producer's poll thread marks deliveries on its own."""

    def __init__(self) -> None:
        import psycopg

        self.seconds = 0.0
        self.waits = 0
        wait = psycopg.Connection.wait
        clock = self

        def timed_wait(connection, *args, **kwargs):
            if not threading.current_thread().name.startswith("django-"):
                return wait(connection, *args, **kwargs)
            started = time.perf_counter()
            try:
                return wait(connection, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - started
                clock.waits += 1

        psycopg.Connection.wait = timed_wait


def backend_pid() -> int:
    """The PostgreSQL backend serving this thread's connection."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def cpu_seconds_of(pid: int) -> float:
    """User and system CPU time of a process on this machine (/proc: the server's backend)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(args.tree))
    relay = None
    if args.mode == "round-trips":
        # This checkout's relay, whichever checkout's code is measured (loaded by its path:
        # the measured code's own packages come first on sys.path).
        spec = importlib.util.spec_from_file_location("round_trips", BASE_DIR / "harness" / "round_trips.py")
        round_trips = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(round_trips)
        url = urlsplit(os.environ["DATABASE_URL"])
        relay = round_trips.RoundTripRelay((url.hostname, url.port))
        netloc = url.netloc.rsplit(":", 1)[0] + f":{relay.port}"
        os.environ["DATABASE_URL"] = urlunsplit(url._replace(netloc=netloc))
    clock = WaitClock()
    from foodsite.asgi import application, http_application  # after the settings' environment

    async def run() -> dict:
        status, headers, page = await call(application, "GET", "/")
        assert status == 200, status
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        dishes = re.findall(rb'name="qty-(\d+)"', page)[: args.lines]
        cookie = "; ".join(c.split(";", 1)[0] for c in headers["set-cookie"] if c.startswith("csrftoken="))
        form = f"csrfmiddlewaretoken={quote(token)}&customer_name=Bench&address=Via%20Roma%201"
        form += "".join(f"&qty-{dish.decode()}=1" for dish in dishes)
        run_id = uuid.uuid4().hex[:12]

        async def order(n: int) -> None:
            body = f"{form}&idempotency_key={run_id}-{n}".encode()
            status, headers, _ = await call(application, "POST", "/", body, cookie)
            if status != 302 or not headers["location"][0].startswith("/orders/"):
                raise SystemExit(f"order {n}: {status} {headers}")

        for n in range(WARM_UP):
            await order(n)
        profiler = cProfile.Profile() if args.mode == "profile" else None
        lane = http_application._threads[0]  # the one request thread (WEB_SYNC_THREADS=1)
        if profiler:
            lane.submit(profiler.enable).result()
        round_trips_before = relay.round_trips if relay else 0
        backend = lane.submit(backend_pid).result()
        server_cpu, cpu = cpu_seconds_of(backend), time.process_time()
        waited, waits = clock.seconds, clock.waits
        walls = []
        for n in range(WARM_UP, WARM_UP + args.orders):
            started = time.perf_counter()
            await order(n)
            walls.append(time.perf_counter() - started)
        result = {
            "orders": args.orders,
            "wall_ms": 1000 * statistics.fmean(walls),
            "wall_median_ms": 1000 * statistics.median(walls),
            "sql_ms": 1000 * (clock.seconds - waited) / args.orders,
            "waits": (clock.waits - waits) / args.orders,
            "cpu_ms": 1000 * (time.process_time() - cpu) / args.orders,
            "server_cpu_ms": 1000 * (cpu_seconds_of(backend) - server_cpu) / args.orders,
        }
        result["python_ms"] = result["wall_ms"] - result["sql_ms"]
        if relay:
            result["round_trips"] = (relay.round_trips - round_trips_before) / args.orders
        if profiler:
            lane.submit(profiler.disable).result()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(args.profile_sort).print_stats(args.profile_top)
            result["profile"] = out.getvalue()
        return result

    print("RESULT " + json.dumps(asyncio.run(run())), flush=True)
    os._exit(0)  # the producer's thread and the relay's: nothing to wait for


# -- the parent: the servers, the checkouts, the alternation ---------------------------------------


def run_child(tree: Path, env: dict, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", "--tree", str(tree), "--mode", mode, "--orders", str(args.orders),
               "--lines", str(args.lines), "--profile-sort", args.profile_sort,
               "--profile-top", str(args.profile_top)]  # fmt: skip
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        output = done.stdout[-2000:] + done.stderr[-3000:]
        sys.exit(f"order_cost: {mode} child for {tree} failed ({done.returncode}):\n{output}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="measured orders per child")
    parser.add_argument("--rounds", type=int, default=3, help="timing children per checkout, alternated")
    parser.add_argument("--lines", type=int, default=1, help="dishes per order (one each)")
    parser.add_argument("--baseline", type=Path, action="append", default=[], help="another checkout, measured too")
    parser.add_argument("--profile", action="store_true", help="cProfile of the request thread, per checkout")
    parser.add_argument("--profile-sort", default="tottime", help="pstats order: tottime, cumtime, ...")
    parser.add_argument("--profile-top", type=int, default=30, help="functions shown")
    parser.add_argument("--no-durable", dest="durable", action="store_false", help="PostgreSQL with fsync off")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=BASE_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM as Ctrl-C: the servers it started (broker, PostgreSQL, daphne) are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(BASE_DIR))
    from devstack.kafka_node import LocalKafka, free_port
    from devstack.postgres_server import LocalPostgres

    trees = [BASE_DIR, *(tree.resolve() for tree in args.baseline)]
    home = Path(tempfile.mkdtemp(prefix="foodsite-ordercost-"))
    home.chmod(0o755)  # PostgreSQL's user must get through it, as root
    broker = LocalKafka(home / "kafka")
    postgres = LocalPostgres(home / "pg", durable=args.durable)
    base_env = {
        **os.environ,
        "FOODSITE_HOME": str(home),
        "LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "DJANGO_STATIC_ROOT": str(home / "static"),
        "DEMO_PASSWORD": uuid.uuid4().hex,
        "WEB_SYNC_THREADS": "1",
    }
    load_before = os.getloadavg()[0]
    results: dict[str, dict] = {str(tree): {"timing": []} for tree in trees}
    try:
        broker.start()
        postgres.start()
        postgres.wait_ready()
        broker.wait_ready()
        base_env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        envs = {}
        for n, tree in enumerate(trees):
            env = {**base_env, "DATABASE_URL": postgres.create_database(f"cost{n}")}
            for step in (
                ["collectstatic", "--noinput"],
                ["migrate", "--noinput"],
                ["seed_demo"],
                *([["init_kafka"]] if n == 0 else []),
            ):
                subprocess.run([sys.executable, "manage.py", *step], cwd=tree, env=env, check=True, capture_output=True)
            envs[tree] = env
        refused = f"127.0.0.1:{free_port()}"
        for tree in trees:
            down = {**envs[tree], "KAFKA_BOOTSTRAP_SERVERS": refused}
            results[str(tree)]["round_trips"] = run_child(tree, down, "round-trips", args)["round_trips"]
        for round_no in range(args.rounds):
            for tree in trees if round_no % 2 == 0 else reversed(trees):
                load = os.getloadavg()[0]
                figures = {**run_child(tree, envs[tree], "timing", args), "load_average": load}
                results[str(tree)]["timing"].append(figures)
                print(
                    f"round {round_no + 1}: {tree.name}: {figures['wall_ms']:.2f} ms per order "
                    f"(median {figures['wall_median_ms']:.2f}), SQL {figures['sql_ms']:.2f}, Python "
                    f"{figures['python_ms']:.2f}, {figures['waits']:.1f} waits; CPU {figures['cpu_ms']:.2f} + server "
                    f"{figures['server_cpu_ms']:.2f} (load average {load:.1f})",
                    flush=True,
                )
        if args.profile:
            for tree in trees:
                results[str(tree)]["profile"] = run_child(tree, envs[tree], "profile", args)["profile"]
    finally:
        broker.stop()
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)

    for figures in results.values():
        for key in ("wall_ms", "sql_ms", "python_ms", "waits", "cpu_ms", "server_cpu_ms"):
            figures[key] = summary([t[key] for t in figures["timing"]])
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "orders": args.orders,
        "lines": args.lines,
        "rounds": args.rounds,
        "postgres_durable": args.durable,
        "load_average": [load_before, os.getloadavg()[0]],
        "cpus": os.cpu_count(),
        "checkouts": results,
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def print_report(report: dict) -> None:
    print(f"command: {report['command']}")
    print(
        f"{report['orders']} orders of {report['lines']} line(s) one after another per child, {report['rounds']} "
        f"rounds alternated; PostgreSQL {'durable' if report['postgres_durable'] else 'fsync off'}; load average "
        f"{report['load_average'][0]:.1f} -> {report['load_average'][1]:.1f} on {report['cpus']} CPUs"
    )
    print(
        f"{'checkout':<24}{'round trips':>12}{'ms/order (min-max)':>20}{'SQL ms':>18}{'Python ms':>18}"
        f"{'CPU ms':>18}{'server CPU ms':>18}"
    )
    for tree, figures in report["checkouts"].items():
        cells = {
            key: f"{f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f})"
            for key, f in figures.items()
            if key in ("wall_ms", "sql_ms", "python_ms", "cpu_ms", "server_cpu_ms")
        }
        print(
            f"{Path(tree).name:<24}{figures['round_trips']:>12.2f}{cells['wall_ms']:>20}{cells['sql_ms']:>18}"
            f"{cells['python_ms']:>18}{cells['cpu_ms']:>18}{cells['server_cpu_ms']:>18}"
        )
        if "profile" in figures:
            print(figures["profile"])


if __name__ == "__main__":
    main()
