"""Web benchmark: N concurrent clients place orders against daphne for a while, next to a
trivial view on the same server as the ceiling; once with Kafka up, once with it down (the
outbox path).

    .venv/bin/python bench/web_bench.py [--clients 32] [--seconds 30] [--client wrk|python]

Starts its own stack (local broker, SQLite file, demo menu, one daphne process) in
production settings (DEBUG off, collected static files; plain HTTP). The load comes from
wrk (Debian's `wrk`: a C client, so the clients take little of the 2 cores from the
server), or with `--client python` from threads of `requests` (much slower clients: the
figures then say more about the client than about the server). Each order is a POST of a
one-dish order with its own idempotency key and must be answered with the redirect to its
order page; the trivial view is `/healthz`. Anything else, or a failed connection, is an
error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from foodsite.launcher import wait_http  # noqa: E402
from foodsite.localkafka import LocalKafka, free_port  # noqa: E402

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
  local body = BODY .. string.format("&idempotency_key=b%d-%d-%d", START, tid, counter)
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


def order_form(url: str) -> tuple[dict, str]:
    """The fields and cookie a browser would send: a CSRF token and a dish of the menu."""
    session = requests.Session()
    menu = session.get(url, timeout=10).text
    dish = re.search(r'name="qty-(\d+)"', menu).group(1)
    fields = {
        "csrfmiddlewaretoken": re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', menu).group(1),
        "customer_name": "Bench",
        "address": "Via Roma 1",
        f"qty-{dish}": "1",
    }
    return fields, f"csrftoken={session.cookies['csrftoken']}"


def measure_wrk(url: str, kind: str, clients: int, seconds: float) -> dict:
    fields, cookie = order_form(url)
    body = "&".join(f"{key}={requests.utils.quote(value)}" for key, value in fields.items())
    script = (
        f"KIND = {json.dumps(kind)}\nEXPECTED = {200 if kind == 'trivial' else 302}\nSTART = {int(time.time())}\n"
        f"BODY = {json.dumps(body)}\n"
        f'HEADERS = {{["Content-Type"] = "application/x-www-form-urlencoded", ["Cookie"] = {json.dumps(cookie)}}}\n'
        + WRK_SCRIPT
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        threads = min(2, clients)
        output = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", lua.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    result = json.loads(output.split("RESULT ", 1)[1])
    return {**result, "rps": result["requests"] / result["seconds"]}


def client_loop(url: str, kind: str, deadline: float, latencies: list[float], errors: list[str]) -> None:
    session = requests.Session()
    fields, _ = order_form(url)
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            if kind == "order":
                data = {**fields, "idempotency_key": uuid.uuid4().hex}
                response = session.post(url, data=data, allow_redirects=False, timeout=10)
                ok = response.status_code == 302
            else:
                response = session.get(f"{url}/healthz", timeout=10)
                ok = response.status_code == 200
        except requests.RequestException as exc:
            errors.append(str(exc))
            continue
        latencies.append(time.perf_counter() - started)
        if not ok:
            errors.append(f"HTTP {response.status_code}")


def measure_python(url: str, kind: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client_loop, args=(url, kind, deadline, latencies, errors)) for _ in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": cuts[49] * 1000,
        "p95": cuts[94] * 1000,
        "p99": cuts[98] * 1000,
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    args = parser.parse_args()
    measure = measure_wrk if args.client == "wrk" else measure_python

    home = Path(tempfile.mkdtemp(prefix="foodsite-webbench-"))
    broker = LocalKafka(home / "kafka", port=free_port())
    broker.start()
    broker.wait_ready()
    port = free_port()
    env = {
        **os.environ,
        "FOODSITE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
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
    web = None
    try:
        for step in (["migrate", "--noinput"], ["collectstatic", "--noinput"], ["init_kafka"], ["seed_demo"]):
            subprocess.run([sys.executable, "manage.py", *step], cwd=BASE_DIR, env=env, check=True, capture_output=True)
        web = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "foodsite.asgi:application"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60)
        results = []
        for kafka in ("up", "down"):
            if kafka == "down":
                broker.stop()
            for kind in ("trivial", "order"):
                results.append((kafka, kind, measure(url, kind, args.clients, args.seconds)))
    finally:
        if web is not None:
            web.terminate()
            web.wait()
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"{args.clients} clients ({args.client}), {args.seconds:g} s per line, one daphne process, SQLite, DEBUG off")
    print(f"{'kafka':<6}{'view':<9}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>7}")
    for kafka, kind, r in results:
        print(
            f"{kafka:<6}{kind:<9}{r['requests']:>9}{r['rps']:>8.0f}{r['p50']:>8.1f}{r['p95']:>8.1f}{r['p99']:>8.1f}"
            f"{r['errors']:>7}"
        )
    for kafka in ("up", "down"):
        trivial, order = (r for k, _, r in results if k == kafka)
        print(
            f"kafka {kafka}: order placement at {order['rps'] / trivial['rps']:.0%} of the trivial view's req/s "
            f"(goal >= 50%), p99 {order['p99']:.0f} ms (goal < 100 ms)"
        )


if __name__ == "__main__":
    main()
