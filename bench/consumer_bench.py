"""Consumer benchmark: a bare confluent-kafka decode loop vs the stats projection through the
shared runner, on the same broker and the same preloaded events, alternated round by round.

    .venv/bin/python bench/consumer_bench.py [--events 200000] [--batch-size 1000] [--rounds 3]
        [--database-url postgres://...] [--json results.json]

Starts its own local broker (or uses --bootstrap), preloads N events (half order.placed,
half payment.succeeded), then runs, round after round, (a) the bare loop, (b) the runner into
a fresh SQLite file and, with --database-url, (c) the runner into a fresh PostgreSQL
database on that server: a, b, c, then b, c, a, ... so that a slow minute of the shared machine
hits every variant. Each consumer runs in its own process (its peak RSS is its own) and
samples its RSS and rate every 5% of the run, which shows whether it grows with the run's
length. Rates count the consume phase only (first message to last event). Every runner's
result is checked against the ground truth of what was produced (exactly-once): the script
exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def setup_django(home: str) -> None:
    os.environ["FOODSITE_HOME"] = home
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
    import django

    django.setup()


def rss_mb(field: str = "VmRSS") -> float:
    """The process's resident set now (VmRSS), or its peak (VmHWM), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """This process's own peak resident set. Not getrusage's ru_maxrss: Linux carries it over
    fork and exec, so every child reported at least the bench's own RSS when it forked (223 MB
    for all three variants of a 200,000-event run, the bare loop included). VmHWM belongs to
    the address space that exec made."""
    return rss_mb("VmHWM")


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Sampler:
    """RSS and rate every `every` events: a flat line is a consumer that does not grow."""

    def __init__(self, total: int) -> None:
        self.every = max(total // 20, 1)
        self.samples: list[dict] = []
        self.first: float | None = None
        self.untimed = 0  # events in before the clock started (the runner's first batch)
        self._cpu_at_start = 0.0
        self._next = self.every
        self._last = (0, 0.0)

    def start(self, done: int = 0) -> None:
        """The consume phase starts now, with `done` events already in (the first batch)."""
        if self.first is None:
            self.first = time.monotonic()
            self._cpu_at_start = cpu_seconds()
            self.untimed = done
            self._last = (done, 0.0)
            self._next = done + self.every

    def cpu(self) -> float:
        """CPU seconds of the whole process (every thread, librdkafka's too) since start(): on
        a shared machine, steadier than the rate, which counts the time waiting for a core."""
        return cpu_seconds() - self._cpu_at_start

    def seen(self, done: int) -> None:
        if done < self._next:
            return
        elapsed = time.monotonic() - self.first
        last_done, last_elapsed = self._last
        rate = (done - last_done) / max(elapsed - last_elapsed, 1e-6)
        self.samples.append(
            {"events": done, "seconds": round(elapsed, 2), "rate": round(rate), "rss_mb": round(rss_mb(), 1)}
        )
        self._last = (done, elapsed)
        self._next = done + self.every


def child_bare(total: int, batch_size: int) -> dict:
    """(a) subscribe, consume, decode; nothing else."""
    from confluent_kafka import Consumer
    from django.conf import settings

    from contract.events import decode
    from eventing.topics import topic_name

    consumer = Consumer(
        {
            "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
            "group.id": f"bare-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic_name("orders"), topic_name("payments")])
    sampler = Sampler(total)
    seen = 0
    while seen < total:
        for message in consumer.consume(batch_size, 0.5):
            if message.error() is None:
                sampler.start()
                decode(message.value())
                seen += 1
        if seen:
            sampler.seen(seen)
    elapsed, cpu = time.monotonic() - sampler.first, sampler.cpu()
    consumer.close()
    return {"events": seen, "seconds": elapsed, "cpu_seconds": cpu, "samples": sampler.samples}


def child_runner(total: int, batch_size: int) -> dict:
    """(b, c) the stats service: ConsumerRunner + SalesProjection, offsets in the same transaction."""
    from django.db import connection

    from eventing import runner as runner_module
    from eventing.runner import ConsumerRunner, RunStats
    from stats.projection import SalesProjection
    from stats.selectors import dish_sales, sales_totals

    sampler = Sampler(total)
    batch_sizes: list[int] = []
    done_before = [0]

    def on_batch(stats: RunStats) -> None:
        done = stats.applied + stats.skipped
        sampler.start(done)  # the clock starts after the first batch: its events are not counted in the rate
        batch_sizes.append(done - done_before[0])
        done_before[0] = done
        sampler.seen(done)
        if sampler.samples and "queries_logged" not in sampler.samples[-1]:
            # Django's DEBUG query log: what it holds now, and its SQL text's size.
            sampler.samples[-1]["queries_logged"] = len(connection.queries_log)
            sampler.samples[-1]["query_log_mb"] = round(sum(len(q["sql"]) for q in connection.queries_log) / 1e6, 1)

    runner = ConsumerRunner(SalesProjection(), batch_size=batch_size, on_batch=on_batch)
    if hasattr(runner_module, "freeze_startup_objects"):  # as the consume_* commands do (a --baseline may predate it)
        runner_module.freeze_startup_objects()
    stats = runner.run(until_caught_up=True)
    elapsed, cpu = time.monotonic() - sampler.first, sampler.cpu()
    totals = sales_totals()
    return {
        "events": stats.applied + stats.skipped,
        "timed_events": stats.applied + stats.skipped - sampler.untimed,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "samples": sampler.samples,
        "batches": stats.batches,
        "full_batches": sum(1 for size in batch_sizes if size >= batch_size),
        "result": {
            "orders": totals.orders,
            "revenue": str(totals.revenue),
            "food_cost": str(totals.food_cost),
            "dishes": {str(d.dish_id): d.quantity for d in dish_sales()},
        },
    }


def run_child(kind: str, env: dict, events: int, batch_size: int, tree: Path = BASE_DIR) -> dict:
    """One consumer in its own process, with the code of `tree` (this checkout, or a baseline).
    A runner's database is migrated first by a process of its own, as `make run` does: loading
    every migration costs ~100 MB for a moment, which is not the consumer's to carry."""
    script = tree / "bench" / "consumer_bench.py"
    if kind != "bare":
        migrate = [sys.executable, str(tree / "manage.py"), "migrate", "--verbosity", "0"]
        subprocess.run(migrate, cwd=tree, env=env, check=True, capture_output=True)
    output = subprocess.run(
        [sys.executable, str(script), "--child", kind, "--events", str(events), "--batch-size", str(batch_size)],
        # In its tree: importing Celery (foodsite/__init__) puts the working directory first
        # on sys.path, and a baseline child would run this checkout's apps on its own foodsite.
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if output.returncode != 0:
        sys.exit(f"{kind} consumer failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def run_quix(env: dict, events: int, prefix: str, run_name: str, work: Path, decode: str = "contract") -> dict:
    """(d) the Quix Streams peer (bench/quix_peer.py) in its own virtualenv, into an output
    topic of its own; its result is that topic added up, read committed."""
    from quix_peer import quix_python

    output = f"{prefix}{run_name}-paid"
    state_dir = work / f"{run_name}-state"
    command = [
        str(quix_python()),
        str(BASE_DIR / "bench" / "quix_peer.py"),
        *("--bootstrap", env["KAFKA_BOOTSTRAP_SERVERS"], "--events", str(events)),
        *("--orders", f"{prefix}orders", "--payments", f"{prefix}payments", "--output", output),
        *("--group", f"{prefix}{run_name}", "--state-dir", str(state_dir), "--decode", decode),
    ]
    done = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"quix peer failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["result"] = paid_orders_on(env["KAFKA_BOOTSTRAP_SERVERS"], output)
    return result


def paid_orders_on(bootstrap: str, topic: str) -> dict:
    """The output topic of the Quix peer added up as the stats tables are, read committed
    to its end: totals, units per dish, and the records that repeat an order (must be 0)."""
    from collections import Counter
    from decimal import Decimal

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            # The end: its position stays before the last transaction's commit marker.
            "enable.partition.eof": True,
        }
    )
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    orders: set[str] = set()
    records, revenue, food_cost, dishes = 0, Decimal("0"), Decimal("0"), Counter()
    at_end: set[int] = set()
    deadline = time.monotonic() + 120
    while len(at_end) < len(partitions):
        if time.monotonic() > deadline:
            sys.exit(f"the Quix peer's output {topic}: no end of partitions {set(partitions) - at_end} within 120 s")
        for message in reader.consume(1000, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                continue
            record = json.loads(message.value())
            records += 1
            orders.add(record["order_id"])
            revenue += Decimal(record["total"])
            food_cost += Decimal(record["food_cost"])
            for dish_id, quantity in record["lines"]:
                dishes[dish_id] += quantity
    reader.close()
    return {
        "orders": len(orders),
        "revenue": str(revenue),
        "food_cost": str(food_cost),
        "dishes": {str(k): v for k, v in sorted(dishes.items())},
        "repeated_records": records - len(orders),
    }


def fresh_postgres_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url`; the URL of the new database."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    conninfo = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path=f"/{name}"))


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


# Variants: the runner in production settings (DEBUG off, as the web bench runs), and in
# make run's default (DEBUG on: Django logs every query); the Quix Streams peer.
VARIANTS = ("bare", "sqlite", "sqlite-debug", "postgres", "quix", "quix-json")
RUNNERS = ("sqlite", "sqlite-debug", "postgres")
PEERS = ("quix", "quix-json")  # the Quix Streams peer decoding with contract.events, or with Quix's JSON


def bench(
    events: int,
    batch_size: int,
    rounds: int,
    bootstrap: str | None = None,
    database_url: str | None = None,
    variants: tuple[str, ...] = ("bare", "sqlite"),
    baseline: Path | None = None,
) -> dict:
    """Run the benchmark; its figures as a dict (printed by main, collected by `make bench`)."""
    from devstack.kafka_node import LocalKafka

    work = tempfile.mkdtemp(prefix="foodsite-bench-")
    broker = None
    if bootstrap is None:
        broker = LocalKafka(Path(work) / "kafka")
        broker.start()
        broker.wait_ready()
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    env = {
        **os.environ,
        "FOODSITE_HOME": work,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_GROUP_PREFIX": prefix,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap or broker.bootstrap_servers,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    os.environ.update(env)
    variants = [v for v in variants if v != "postgres" or database_url]
    if baseline is not None:  # the same runner variants with the baseline's code, alternated
        variants += [f"{v}@baseline" for v in variants if v in RUNNERS]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        setup_django(work)
        from eventing.topics import admin_client, declared_topics, ensure_topics
        from harness.streams import OrderStream

        ensure_topics(admin_client(), declared_topics())
        started = time.monotonic()
        stream = OrderStream(env["KAFKA_BOOTSTRAP_SERVERS"], paid_share=1.0)
        stream.produce(events // 2)
        produced = stream.events_sent
        print(f"preloaded {produced:,} events in {time.monotonic() - started:.1f} s", flush=True)

        for n in range(rounds):
            # Each round starts one variant further: none always runs first or last.
            for variant in variants[n % len(variants) :] + variants[: n % len(variants)]:
                kind, _, tree = variant.partition("@")
                child_env = {**env, "KAFKA_GROUP_PREFIX": f"{prefix}r{n}{variant}-"}
                if kind != "debug" and not kind.endswith("-debug"):
                    child_env.update(DJANGO_DEBUG="0", DJANGO_SECRET_KEY="bench-only-not-a-secret")
                if kind != "bare":  # a fresh database each time
                    home = Path(work) / f"{variant}-{n}"
                    home.mkdir()
                    child_env["FOODSITE_HOME"] = str(home)
                if kind == "postgres":
                    child_env["DATABASE_URL"] = fresh_postgres_database(database_url, f"bench_{uuid.uuid4().hex[:8]}")
                if kind in PEERS:
                    decode = "contract" if kind == "quix" else "plain-json"
                    result = run_quix(child_env, produced, prefix, f"r{n}{kind}", Path(work), decode)
                else:
                    result = run_child(
                        "bare" if kind == "bare" else "runner",
                        child_env,
                        produced,
                        batch_size,
                        baseline if tree else BASE_DIR,
                    )
                timed = result.get("timed_events", result["events"])
                result["rate"] = timed / result["seconds"]
                result["cpu_us_per_event"] = result["cpu_seconds"] / timed * 1e6
                # Without the first and last twentieth: the rate once running, before the end
                # (the Quix peer's last tenth waits for more input: a 1 s poll, buffer by buffer).
                middle = [sample["rate"] for sample in result["samples"][1:-1]] or [result["rate"]]
                result["steady_rate"] = statistics.median(middle)
                result["load_average"] = os.getloadavg()
                runs[variant].append(result)
                print(
                    f"round {n + 1} {variant:<9}{result['rate']:>9,.0f} ev/s"
                    f" ({result['cpu_us_per_event']:.0f} us CPU/event)"
                    f"  peak RSS {result['peak_rss_mb']:.0f} MB"
                    f"  RSS over the run {[s['rss_mb'] for s in result['samples'][::4]]}"
                    f"  load average {result['load_average'][0]:.1f}",
                    flush=True,
                )
    finally:
        if broker is not None:
            broker.stop()

    expected = stream.truth.as_result()
    keys = ("orders", "revenue", "food_cost", "dishes")
    checked = [v for v in variants if v != "bare"]
    exact = all(
        run["result"][k] == expected[k] and not run["result"].get("repeated_records")
        for v in checked
        for run in runs[v]
        for k in keys
    )
    report = {
        "events": produced,
        "batch_size": batch_size,
        "rounds": rounds,
        "exactly_once": exact,
        "load_average": os.getloadavg(),
        "variants": {},
    }
    for variant in variants:
        rates = [run["rate"] for run in runs[variant]]
        entry = {
            "rate": spread(rates),
            "peak_rss_mb": spread([run["peak_rss_mb"] for run in runs[variant]]),
            "cpu_us_per_event": spread([run["cpu_us_per_event"] for run in runs[variant]]),
            "load_average": [run["load_average"][0] for run in runs[variant]],
            "samples": runs[variant][-1]["samples"],
        }
        kind = variant.partition("@")[0]
        if kind in RUNNERS:
            entry["full_batch_share"] = spread([run["full_batches"] / run["batches"] for run in runs[variant]])
        # Each round's ratios against the bare loop and the Quix peer of the same round.
        if kind != "bare" and "bare" in runs:
            entry["ratio"] = spread(
                [run["rate"] / bare["rate"] for run, bare in zip(runs[variant], runs["bare"], strict=True)]
            )
        entry["steady_rate"] = spread([run["steady_rate"] for run in runs[variant]])
        for peer in PEERS:
            if kind in RUNNERS and peer in runs:
                pairs = list(zip(runs[variant], runs[peer], strict=True))
                entry[f"to_{peer}"] = {
                    figure: spread([run[figure] / other[figure] for run, other in pairs])
                    for figure in ("rate", "steady_rate", "peak_rss_mb", "cpu_us_per_event")
                }
        report["variants"][variant] = entry
    if not exact:
        report["mismatch"] = {
            "expected": {k: expected[k] for k in keys},
            "got": {v: runs[v][-1]["result"] for v in checked},
        }
    return report


def print_report(report: dict) -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{report['events']:,} events, batch {report['batch_size']}, {report['rounds']} rounds alternated; "
        f"load average at the end {', '.join(f'{x:.1f}' for x in report['load_average'])}"
    )
    names = {
        "bare": "bare loop + decode",
        "sqlite": "runner, SQLite",
        "sqlite-debug": "runner, SQLite, DEBUG on",
        "postgres": "runner, PostgreSQL",
        "quix": "Quix Streams, exactly-once",
        "quix-json": "Quix Streams, its JSON, unchecked",
    }

    def name_of(variant: str) -> str:
        kind, _, tree = variant.partition("@")
        return names[kind] + (" (baseline)" if tree else "")

    def text(figures: dict, digits: int = 0) -> str:
        return f"{figures['median']:,.{digits}f} ({figures['min']:,.{digits}f}-{figures['max']:,.{digits}f})"

    print(
        f"{'median (min-max) of the rounds':<38}{'events/s':>26}{'steady events/s':>26}{'CPU us/event':>20}"
        f"{'peak RSS MB':>16}  load average per round"
    )
    for variant, entry in report["variants"].items():
        print(
            f"{name_of(variant):<38}{text(entry['rate']):>26}{text(entry['steady_rate']):>26}"
            f"{text(entry['cpu_us_per_event'], 1):>20}{text(entry['peak_rss_mb']):>16}"
            f"  {', '.join(f'{x:.1f}' for x in entry['load_average'])}"
        )
    ratios = [(v, peer) for v, entry in report["variants"].items() for peer in PEERS if f"to_{peer}" in entry]
    if ratios:
        print(f"{'ratios, round by round':<52}{'events/s':>20}{'steady events/s':>20}{'peak RSS':>20}{'CPU':>20}")
    for variant, peer in ratios:
        to = report["variants"][variant][f"to_{peer}"]
        print(
            f"{name_of(variant) + ' / ' + peer:<52}{text(to['rate'], 2):>20}{text(to['steady_rate'], 2):>20}"
            f"{text(to['peak_rss_mb'], 2):>20}{text(to['cpu_us_per_event'], 2):>20}"
        )
    for variant, entry in report["variants"].items():
        if variant != "bare":
            print(f"{variant}: RSS over the run {[s['rss_mb'] for s in entry['samples']]}")
            full = f"batches full: {entry['full_batch_share']['median']:.0%}, " if "full_batch_share" in entry else ""
            print(f"{' ' * len(variant)}  {full}events/s per 5% of the run {[s['rate'] for s in entry['samples']]}")
    print(f"exactly-once check against the produced ground truth: {'OK' if report['exactly_once'] else 'MISMATCH'}")
    if not report["exactly_once"]:
        print(report["mismatch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--database-url", help="also run the projection on this PostgreSQL server (a database per run)")
    parser.add_argument("--variants", default="bare,sqlite", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--baseline", type=Path, help="a checkout with this script: its runner variants run too")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", choices=["bare", "runner"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        setup_django(os.environ["FOODSITE_HOME"])
        result = (child_bare if args.child == "bare" else child_runner)(args.events, args.batch_size)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    variants = tuple(args.variants.split(","))
    if "postgres" not in variants and args.database_url:
        variants += ("postgres",)
    report = bench(
        args.events, args.batch_size, args.rounds, args.bootstrap, args.database_url, variants, args.baseline
    )
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not report["exactly_once"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
