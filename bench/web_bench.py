"""Web benchmark: N concurrent clients place orders against daphne for a while, next to a
trivial view on the same server as the ceiling; once with Kafka up, once with it down (the
outbox path).

    .venv/bin/python bench/web_bench.py [--clients 32] [--seconds 30]

Starts its own stack (local broker, SQLite file, demo menu, one daphne process). Each client
is a thread with its own session: one GET of the menu for the CSRF cookie, then POSTs of a
one-dish order with a fresh idempotency key, each answered by a redirect to the order page
(not followed). Errors are any other status or a failed connection. The clients run on the
same 2 cores as the server: the figures are a floor, not the server's own ceiling.
"""

from __future__ import annotations

import argparse
import os
import re
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


def client_loop(url: str, kind: str, deadline: float, latencies: list[float], errors: list[str]) -> None:
    session = requests.Session()
    menu = session.get(url, timeout=10).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', menu).group(1)
    dish = re.search(r'name="qty-(\d+)"', menu).group(1)
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            if kind == "order":
                response = session.post(
                    url,
                    data={
                        "csrfmiddlewaretoken": token,
                        "customer_name": "Bench",
                        "address": "Via Roma 1",
                        f"qty-{dish}": "1",
                        "idempotency_key": uuid.uuid4().hex,
                    },
                    allow_redirects=False,
                    timeout=10,
                )
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


def measure(url: str, kind: str, clients: int, seconds: float) -> dict:
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
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": quantiles[49] * 1000,
        "p95": quantiles[94] * 1000,
        "p99": quantiles[98] * 1000,
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="foodsite-webbench-")
    broker = LocalKafka(Path(home) / "kafka", port=free_port())
    broker.start()
    broker.wait_ready()
    port = free_port()
    env = {
        **os.environ,
        "FOODSITE_HOME": home,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    web = None
    try:
        for step in (["migrate", "--noinput"], ["init_kafka"], ["seed_demo"]):
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

    print(
        f"command: {Path(sys.executable).name} {' '.join(sys.argv)}   ({args.clients} clients, {args.seconds:g} s each)"
    )
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
