"""What the logs say during a broker outage: `make run`'s stack, the broker killed for N seconds.

    .venv/bin/python bench/outage_logs.py [--outage 10] [--orders-per-second 2]

Starts its own broker (python -m devstack.kafka_node) and the launcher against it (so the
broker can be killed and restarted under the running stack), places orders over HTTP at a
steady rate, kills the broker with SIGKILL, starts it again after --outage seconds, waits
until an order placed after that reaches the staff page, then stops everything and prints
how many log lines each process wrote from the kill until the recovery, by level, and the
librdkafka lines among them.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from devstack.kafka_node import LocalKafka, free_port  # noqa: E402
from harness.http_client import logged_in, order_and_pay  # noqa: E402

LINE = re.compile(r"^\S+ (?P<process>\S+)\s*\| (?P<text>.*)$")
LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=10)
    parser.add_argument("--orders-per-second", type=float, default=2)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="outage-logs-"))
    broker = LocalKafka(home / "kafka")
    broker.start()
    broker.wait_ready(timeout=120)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FOODSITE_HOME": str(home), "PORT": str(port)}
    env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    log_path = home / "launcher.log"
    with log_path.open("wb") as sink:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "devstack.launcher"], cwd=BASE_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    stop_load = threading.Event()
    placed = collections.Counter()

    def load() -> None:
        session = requests.Session()
        while not stop_load.is_set():
            try:
                order_and_pay(session, url)
                placed["ok"] += 1
            except Exception:
                placed["failed"] += 1
            time.sleep(1 / args.orders_per_second)

    try:
        deadline = time.monotonic() + 180
        while "| ready in" not in log_path.read_text(errors="replace"):
            if launcher.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(errors="replace")[-3000:])
                return 1
            time.sleep(0.5)
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(5)
        start_mark = len(log_path.read_bytes())
        broker.process.kill()
        broker.process.wait()
        killed = time.monotonic()
        time.sleep(args.outage)
        broker.start()
        broker.wait_ready(timeout=120)
        staff = logged_in(url, "staff")
        # Recovered: every order placed so far (outage included) is on the staff page.
        while True:
            want = placed["ok"]
            if re.search(r'id="stat-orders">(\d+)<', staff.get(f"{url}/stats/").text).group(1) == str(want):
                break
            assert time.monotonic() - killed < 180, "the stack never caught up"
            time.sleep(0.5)
        recovered = time.monotonic()
        time.sleep(3)  # the outage's closing lines ("reachable again") come with the next statistics
        stop_load.set()
        loader.join()
        window = log_path.read_bytes()[start_mark:].decode(errors="replace")
    finally:
        stop_load.set()
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)
        broker.stop()

    per_process: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for raw in window.splitlines():
        match = LINE.match(raw)
        if not match:
            continue
        level = LEVEL.search(match["text"])
        counts = per_process[match["process"]]
        counts["lines"] += 1
        counts[level.group(1) if level else "other"] += 1
        counts["librdkafka"] += "librdkafka" in match["text"]
    print(
        f"broker killed for {args.outage:g} s under {args.orders_per_second:g} orders/s; "
        f"caught up {recovered - killed:.1f} s after the kill; orders ok {placed['ok']}, failed {placed['failed']}"
    )
    print(f"{'process':<16} {'lines':>6} {'ERROR':>6} {'WARNING':>8} {'INFO':>6} {'librdkafka':>11}")
    for name, counts in sorted(per_process.items()):
        print(
            f"{name:<16} {counts['lines']:>6} {counts['ERROR']:>6} {counts['WARNING']:>8} {counts['INFO']:>6} "
            f"{counts['librdkafka']:>11}"
        )
    total = sum(per_process.values(), collections.Counter())
    print(
        f"{'total':<16} {total['lines']:>6} {total['ERROR']:>6} {total['WARNING']:>8} {total['INFO']:>6} "
        f"{total['librdkafka']:>11}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
