"""Web benchmark: order placement against the trivial view on the same server, closed loop
(N clients, each waiting for its answer) and open loop (orders at a fixed rate), on SQLite
and on PostgreSQL, with Kafka up and down, one or more daphne processes.

    .venv/bin/python bench/web_bench.py [--databases sqlite,postgres] [--kafka up,down]
        [--processes 1] [--threads default] [--clients 32] [--seconds 8] [--rounds 3]
        [--rate 150] [--open-seconds 8] [--no-durable] [--json results.json]

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
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import requests

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

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
    }


class Web:
    """`processes` daphne processes on one listening socket, with `env`."""

    def __init__(self, env: dict, processes: int, tree: Path = BASE_DIR) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.listener.set_inheritable(True)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        fd = self.listener.fileno()
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "daphne", "--fd", str(fd), "foodsite.asgi:application"],
                cwd=tree,
                env=env,
                pass_fds=[fd],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        wait_http(f"{self.url}/healthz", timeout=90)
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
        help="instead of the cross product above: comma-separated database:kafka:processes[:threads], "
        "e.g. sqlite:up:1,postgres:up:2",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="a checkout (e.g. `git archive main | tar -x -C DIR`) whose web runs each variant too, alternated",
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8, help="per closed-loop measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=150, help="open loop: orders a second (0: no open loop)")
    parser.add_argument("--open-seconds", type=float, default=8)
    parser.add_argument("--no-durable", dest="durable", action="store_false", help="PostgreSQL with fsync off")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("web_bench: wrk not found (apt-get install wrk; `make bench` does)")
    if args.rate and not VEGETA.exists():
        sys.exit(f"web_bench: {VEGETA} not found (`make bench` installs it; or --rate 0)")
    if args.variants:
        variants = []
        for spec in args.variants.split(","):
            db, kafka, processes, threads = ([*spec.split(":"), "default"])[:4]
            variants.append({"database": db, "kafka": kafka, "processes": int(processes), "threads": threads})
    else:
        variants = [
            {"database": db, "kafka": kafka, "processes": int(processes), "threads": threads}
            for db in args.databases.split(",")
            for kafka in args.kafka.split(",")
            for processes in args.processes.split(",")
            for threads in args.threads.split(",")
        ]
    for variant in variants:
        variant["tree"] = ""
    variants += [{**v, "tree": str(tree)} for tree in args.baseline for v in variants]
    databases = list(dict.fromkeys(v["database"] for v in variants))

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
    }
    database_urls = {"sqlite": f"sqlite:///{home / 'bench.sqlite3'}"}
    load_before = load_average()
    try:
        broker.start()
        if "postgres" in databases:
            postgres = LocalPostgres(home / "pg", durable=args.durable)
            postgres.start()
            postgres.wait_ready()
            database_urls["postgres"] = postgres.create_database("bench")
        broker.wait_ready()
        base_env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers  # its port moves if it was taken
        manage(base_env, "collectstatic", "--noinput")
        manage({**base_env, "DATABASE_URL": database_urls[databases[0]]}, "init_kafka")
        for db in databases:
            env = {**base_env, "DATABASE_URL": database_urls[db]}
            manage(env, "migrate", "--noinput")
            manage(env, "seed_demo")
        refused = f"127.0.0.1:{free_port()}"  # nothing listens there: Kafka down for the web
        for variant in variants:
            variant["rounds"] = []
        for round_no in range(args.rounds):
            for variant in variants:
                env = {
                    **base_env,
                    "DATABASE_URL": database_urls[variant["database"]],
                    "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers if variant["kafka"] == "up" else refused,
                }
                if variant["threads"] != "default":
                    env["WEB_SYNC_THREADS"] = variant["threads"]
                web = Web(env, variant["processes"], Path(variant["tree"]) if variant["tree"] else BASE_DIR)
                try:
                    measured = {
                        "trivial": closed_loop(web.url, "trivial", args.clients, args.seconds),
                        "order": closed_loop(web.url, "order", args.clients, args.seconds),
                    }
                    if args.rate:
                        measured["open"] = open_loop(web.url, args.rate, args.open_seconds)
                finally:
                    web.stop()
                measured["ratio"] = measured["order"]["rps"] / measured["trivial"]["rps"]
                variant["rounds"].append(measured)
                print(f"round {round_no + 1}: {label(variant)}: {brief(measured)}", flush=True)
    finally:
        broker.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(home, ignore_errors=True)

    for variant in variants:
        rounds = variant["rounds"]
        variant["ratio"] = summary([r["ratio"] for r in rounds])
        for kind in ("trivial", "order", *(["open"] if args.rate else [])):
            for figure in ("rps", "p50", "p95", "p99", *(["max"] if kind == "open" else [])):
                variant[f"{kind}_{figure}"] = summary([r[kind][figure] for r in rounds])
            variant[f"{kind}_errors"] = sum(r[kind]["errors"] for r in rounds)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rate": args.rate,
        "open_seconds": args.open_seconds,
        "postgres_durable": args.durable,
        "load_average": [load_before, load_average()],
        "cpus": os.cpu_count(),
        "variants": variants,
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def label(variant: dict) -> str:
    threads = "" if variant["threads"] == "default" else f", {variant['threads']} threads"
    processes = "1 daphne" if variant["processes"] == 1 else f"{variant['processes']} daphnes"
    tree = f" [{Path(variant['tree']).name}]" if variant["tree"] else ""
    return f"{variant['database']}, kafka {variant['kafka']}, {processes}{threads}{tree}"


def brief(measured: dict) -> str:
    text = (
        f"trivial {measured['trivial']['rps']:.0f} req/s, orders {measured['order']['rps']:.0f} req/s "
        f"(p99 {measured['order']['p99']:.0f} ms) = {measured['ratio']:.2f}"
    )
    if "open" in measured:
        o = measured["open"]
        text += f"; open loop {o['rate']:.0f}/s: p50 {o['p50']:.1f} p99 {o['p99']:.1f} max {o['max']:.0f} ms"
    errors = sum(m["errors"] for m in measured.values() if isinstance(m, dict))
    return text + (f", {errors} errors" if errors else "")


def print_report(report: dict) -> None:
    durable = "durable" if report["postgres_durable"] else "fsync off"
    print(f"command: {report['command']}")
    print(
        f"{report['clients']} closed-loop clients (wrk), {report['seconds']:g} s each; open loop (vegeta) "
        f"{report['rate']} orders/s for {report['open_seconds']:g} s; {report['rounds']} rounds alternating the "
        f"variants; PostgreSQL {durable}; DEBUG off; load average {report['load_average'][0]:.1f} -> "
        f"{report['load_average'][1]:.1f} on {report['cpus']} CPUs"
    )
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
