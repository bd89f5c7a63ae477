"""Consumer benchmark: a bare confluent-kafka decode loop vs the stats projection through the
shared runner into SQLite, on the same broker and the same preloaded events.

    .venv/bin/python bench/consumer_bench.py [--events 200000] [--batch-size 1000]

Starts its own local broker (or uses --bootstrap), preloads N events (half order.placed,
half payment.succeeded), then runs each consumer in its own process so that its peak RSS is
its own. Rates count the consume phase only: from the first message received to the last
event processed (group join and process start-up excluded). The runner's result is checked
against the ground truth of what was produced (exactly-once), and the script fails if not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def setup_django(home: str) -> None:
    os.environ["FOODSITE_HOME"] = home
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
    import django

    django.setup()


def child_bare(total: int, batch_size: int) -> dict:
    """(a) subscribe, consume, decode; nothing else."""
    from confluent_kafka import Consumer
    from django.conf import settings

    from foodsite.events import decode
    from foodsite.kafka.topics import topic_name

    consumer = Consumer(
        {
            "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
            "group.id": f"bare-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic_name("orders"), topic_name("payments")])
    seen, first = 0, None
    while seen < total:
        for message in consumer.consume(batch_size, 0.5):
            if message.error() is None:
                first = first or time.monotonic()
                decode(message.value())
                seen += 1
    elapsed = time.monotonic() - first
    consumer.close()
    return {"events": seen, "seconds": elapsed}


def child_runner(total: int, batch_size: int) -> dict:
    """(b) the stats service: ConsumerRunner + SalesProjection, offsets in the same transaction."""
    from django.core.management import call_command

    from foodsite.kafka.runner import ConsumerRunner, RunStats
    from stats.projection import SalesProjection
    from stats.selectors import dish_sales, sales_totals

    call_command("migrate", verbosity=0)
    first: list[float] = []

    def on_batch(stats: RunStats) -> None:
        if not first:  # the first batch's own time is lost: close enough at 1000/200000
            first.append(time.monotonic())

    runner = ConsumerRunner(SalesProjection(), batch_size=batch_size, on_batch=on_batch)
    stats = runner.run(until_caught_up=True)
    elapsed = time.monotonic() - first[0]
    totals = sales_totals()
    return {
        "events": stats.applied + stats.skipped,
        "seconds": elapsed,
        "result": {
            "orders": totals.orders,
            "revenue": str(totals.revenue),
            "food_cost": str(totals.food_cost),
            "dishes": {str(d.dish_id): d.quantity for d in dish_sales()},
        },
    }


def run_child(kind: str, env: dict, events: int, batch_size: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--events", str(events), "--batch-size", str(batch_size)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if output.returncode != 0:
        sys.exit(f"{kind} consumer failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--child", choices=["bare", "runner"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        setup_django(os.environ["FOODSITE_HOME"])
        result = (child_bare if args.child == "bare" else child_runner)(args.events, args.batch_size)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    from foodsite.localkafka import LocalKafka, free_port

    work = tempfile.mkdtemp(prefix="foodsite-bench-")
    broker = None
    if args.bootstrap is None:
        broker = LocalKafka(Path(work) / "kafka", port=free_port())
        broker.start()
        broker.wait_ready()
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    env = {
        **os.environ,
        "FOODSITE_HOME": work,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_GROUP_PREFIX": prefix,
        "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap or broker.bootstrap_servers,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    try:
        setup_django(work)
        from foodsite.kafka.topics import admin_client, declared_topics, ensure_topics
        from tests.streams import OrderStream

        ensure_topics(admin_client(), declared_topics())
        started = time.monotonic()
        stream = OrderStream(env["KAFKA_BOOTSTRAP_SERVERS"], paid_share=1.0)
        stream.produce(args.events // 2)
        produced = stream.events_sent
        print(f"preloaded {produced:,} events in {time.monotonic() - started:.1f} s")

        bare = run_child("bare", env, produced, args.batch_size)
        runner = run_child("runner", env, produced, args.batch_size)
    finally:
        if broker is not None:
            broker.stop()

    expected = stream.truth.as_result()
    exact = all(runner["result"][key] == expected[key] for key in ("orders", "revenue", "food_cost", "dishes"))
    rate_a = bare["events"] / bare["seconds"]
    rate_b = runner["events"] / runner["seconds"]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{'':<42}{'events':>10}{'seconds':>10}{'events/s':>11}{'peak RSS':>11}")
    for name, result, rate in (
        ("(a) bare confluent-kafka loop + decode", bare, rate_a),
        ("(b) stats projection via runner, SQLite", runner, rate_b),
    ):
        print(
            f"{name:<42}{result['events']:>10,}{result['seconds']:>10.1f}{rate:>11,.0f}{result['peak_rss_mb']:>8.0f} MB"
        )
    print(f"ratio b/a: {rate_b / rate_a:.0%} (goal >= 30%)   batch size {args.batch_size}")
    print(f"exactly-once check against the produced ground truth: {'OK' if exact else 'MISMATCH'}")
    if not exact:
        print(f"expected {expected}\ngot      {runner['result']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
