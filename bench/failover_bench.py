"""Failover benchmark: the broker leading most partitions of orders and payments is killed
(kill -9) while customers place and pay many orders over HTTP; the figures of
tests/test_failover.py's first test, at scale.

    .venv/bin/python bench/failover_bench.py [--orders 50000] [--customers 4]

Starts its own production shape (devstack.kafka_cluster's three KRaft nodes, RF 3,
min.insync.replicas=2, acks=all; PostgreSQL and Redis from Debian's packages; two daphne web
processes, two copies of the stats and deliveries consumers, the Celery worker and beat:
tests/stack.py) and drives it with tests/load.py: a few threads of customers, each order two
POSTs (place, pay), alternating between the web processes. Once a fifth of the orders are
paid, the leading broker is killed; it is started again after the load, and must rejoin with
every partition's three replicas in sync. Then every paid order must be on the topics and
counted once by the statistics and delivery services. Prints the load's figures (orders,
rate, slowest request, requests over 0.5 s, failures), the times to recover, lost and doubled,
and the CPU seconds each kind of process spent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")

import django  # noqa: E402

django.setup()

from devstack.kafka_cluster import LocalCluster  # noqa: E402
from devstack.postgres_server import LocalPostgres  # noqa: E402
from devstack.redis_server import LocalRedis  # noqa: E402
from harness.scenarios import kill_the_leader_under_load  # noqa: E402
from harness.stack import Stack, machine_load, wait_for  # noqa: E402


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, its reaped children and its live children (PostgreSQL's
    backends, Celery's pool), from Linux's /proc; None once it is gone."""

    def stat(path: Path) -> list[str] | None:
        try:
            return path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None

    own = stat(Path(f"/proc/{pid}/stat"))
    if own is None:
        return None
    ticks = sum(int(f) for f in own[11:15])
    for path in Path("/proc").glob("[0-9]*/stat"):
        child = stat(path)
        if child is not None and child[1] == str(pid):
            ticks += sum(int(f) for f in child[11:13])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=4, help="client threads")
    parser.add_argument("--rate", type=float, default=None, help="orders per second (default: as fast as they go)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="foodsite-failover-bench-"))
    cluster = LocalCluster(home / "cluster")
    # Its own temporary directory: the server runs as the `postgres` user, who cannot enter `home`.
    postgres_home = Path(tempfile.mkdtemp(prefix="foodsite-failover-bench-postgres-"))
    postgres = LocalPostgres(postgres_home, durable=True)
    redis = LocalRedis(home / "redis")
    stack = None
    finished = False
    try:
        started = time.monotonic()
        cluster.start()
        postgres.start()
        redis.start()
        cluster.wait_ready(timeout=300)
        postgres.wait_ready(timeout=120)
        redis.wait_ready(timeout=60)
        stack = Stack(
            home / "stack",
            cluster.bootstrap_servers,
            database_url=postgres.create_database("foodsite"),
            celery_broker_url=redis.url,
            env={"KAFKA_REPLICATION_FACTOR": "3"},
        )
        stack.prepare()
        stack.start_web()
        stack.start_consumers("stats", "deliveries")
        stack.start_worker()
        stack.start_beat()
        stack.wait_consuming()
        wait_for(lambda: not stack.under_replicated(), 120, "replicas never in sync")
        print(f"stack ready in {time.monotonic() - started:.0f} s; {args.orders} orders, {args.customers} customers")

        processes = {p.pid: stack.argv[p.pid][0] for p in stack.running if p.poll() is None}
        processes[postgres.process.pid] = "postgres"
        processes.update({node.process.pid: "kafka" for node in cluster.nodes})
        cpu_before = {pid: cpu_seconds(pid) for pid in processes}
        client_before = os.times()
        kill = kill_the_leader_under_load(
            stack,
            cluster,
            args.orders,
            args.customers,
            args.rate,
            progress=lambda load: print(load.progress(), flush=True),
        )
        result = kill.result
        caught_up = wait_for(lambda: stack.caught_up("stats", "deliveries"), 600, "consumers never caught up")
        client = os.times()
        cpu = Counter({"client (this script)": client.user + client.system - client_before.user - client_before.system})
        for pid, name in processes.items():
            now = cpu_seconds(pid)
            if now is not None and cpu_before[pid] is not None:  # not the killed broker
                cpu[name] += now - cpu_before[pid]
        tally = stack.tally(result.paid)

        print(result.summary())
        print(kill.describe())
        print(f"projections caught up {caught_up:.1f} s after the broker was back in sync")
        print(tally.describe())
        print(
            "CPU seconds from the start of the load to the projections caught up (the killed broker not "
            "counted, the restarted one not either): " + ", ".join(f"{name} {s:.0f}" for name, s in cpu.most_common())
        )
        print(
            f"failed requests {len(result.failures)}, requests over 0.5 s {len(result.over)}, "
            f"lost = {tally.lost}, doubled = {tally.doubled}"
        )
        print(machine_load())
        if result.failures:
            print("first failures:", *result.failures[:10], sep="\n  ")
        finished = True
    finally:
        if stack is not None:
            stack.close()
        redis.stop()
        postgres.stop()
        cluster.stop()
        if finished:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(postgres_home, ignore_errors=True)
        else:
            print(f"logs kept in {home} (processes: stack/logs, brokers: cluster/node-*/kafka.log)")


if __name__ == "__main__":
    main()
