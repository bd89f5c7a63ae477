"""Replay: `manage.py consume_stats --replay` over N retained events, timed and checked.

    .venv/bin/python bench/replay_bench.py [--events 1000000] [--runs 2] [--debug] [--json results.json]

Starts its own local broker (or uses --bootstrap), preloads N events (half order.placed,
half payment.succeeded, as bench/consumer_bench.py), migrates a fresh SQLite file, then runs
the real command `runs` times, as an operator would: the first replay builds the projection
from nothing, the next ones rebuild it (deleting what the previous one wrote, then reading
everything again). Each run's totals are compared with the ground truth of what was
produced (exact or the script exits 1), and its progress bar's last line is shown. Settings
are production's (DEBUG off) unless --debug (make run's default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def bench(events: int, runs: int, debug: bool = False, bootstrap: str | None = None) -> dict:
    """Preload, replay `runs` times; the figures as a dict (printed by main, collected by `make bench`)."""
    from devstack.kafka_node import LocalKafka

    work = tempfile.mkdtemp(prefix="foodsite-replay-")
    broker = None
    if bootstrap is None:
        broker = LocalKafka(Path(work) / "kafka")
        broker.start()
        broker.wait_ready()
    prefix = f"replay-{uuid.uuid4().hex[:8]}-"
    env = {
        **os.environ,
        "FOODSITE_HOME": work,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_GROUP_PREFIX": prefix,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap or broker.bootstrap_servers,
        "DJANGO_SETTINGS_MODULE": "foodsite.settings",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    if not debug:
        env.update(DJANGO_DEBUG="0", DJANGO_SECRET_KEY="bench-only-not-a-secret")
    os.environ.update(env)
    report: dict = {"events": events, "debug": debug, "runs": []}
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from eventing.topics import admin_client, declared_topics, ensure_topics
        from harness.streams import OrderStream
        from stats.selectors import dish_sales, sales_totals

        call_command("migrate", verbosity=0)
        ensure_topics(admin_client(), declared_topics())
        started = time.monotonic()
        stream = OrderStream(env["KAFKA_BOOTSTRAP_SERVERS"], paid_share=1.0)
        stream.produce(events // 2)
        report["events"] = stream.events_sent
        print(f"preloaded {stream.events_sent:,} events in {time.monotonic() - started:.1f} s", flush=True)
        expected = stream.truth.as_result()

        for n in range(runs):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "manage.py", "consume_stats", "--replay"],
                cwd=BASE_DIR,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - started
            if done.returncode != 0:
                sys.exit(f"replay failed:\n{done.stderr[-3000:]}")
            progress = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.startswith("[")]
            totals = sales_totals()
            got = {
                "orders": totals.orders,
                "revenue": str(totals.revenue),
                "food_cost": str(totals.food_cost),
                "dishes": {str(d.dish_id): d.quantity for d in dish_sales()},
            }
            exact = all(got[key] == expected[key] for key in got)
            run = {
                "seconds": round(seconds, 1),
                "rate": round(report["events"] / seconds),
                "exact": exact,
                "progress_lines": len(progress),
                "last_progress": progress[-1].strip() if progress else "",
                "summary": done.stdout.strip(),
            }
            report["runs"].append(run)
            print(
                f"replay {n + 1}: {run['seconds']} s, {run['rate']:,} events/s (whole command, start-up included), "
                f"{'exact' if exact else 'NOT EXACT'}\n  {run['last_progress']}\n  {run['summary']}",
                flush=True,
            )
            if not exact:
                report["mismatch"] = {"expected": {k: expected[k] for k in got}, "got": got}
    finally:
        if broker is not None:
            broker.stop()
    report["load_average"] = os.getloadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--debug", action="store_true", help="DEBUG on, as make run's default")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    report = bench(args.events, args.runs, args.debug, args.bootstrap)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in report['load_average'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not all(run["exact"] for run in report["runs"]):
        print(report.get("mismatch"))
        sys.exit(1)


if __name__ == "__main__":
    main()
