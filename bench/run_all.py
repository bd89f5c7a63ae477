"""Every benchmark in one go (`make bench`): one table of ratios and percentiles, written to
bench/results/<date>.json and printed beside the previous file's figures.

    .venv/bin/python bench/run_all.py [--full] [--only web,consumer,...] [--results bench/results]

Each benchmark is its own script, run here as a subprocess with `--json` (see
bench/README.md for what each measures); this driver only starts what they share (one local
broker for the consumer and replay benches, one durable local PostgreSQL for the consumer
bench), picks the sizes, and collects the figures. Default sizes take about 25 minutes on
a 2-core machine; `--full` runs the issue's sizes (1,000,000 events, longer web runs).
`--tiny` is for the test that checks the driver itself runs (figures meaningless).
Exit status 1 if a benchmark failed or an exactly-once check did not hold (the web benches':
every order the web took on `orders`, once); the figures of the others are still written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from devstack.kafka_node import LocalKafka  # noqa: E402
from devstack.postgres_server import LocalPostgres  # noqa: E402

STEPS = (
    "serialization", "recommendations", "consumer", "replay", "live", "live-production", "watchers", "web",
    "web-capacity", "live-cluster", "live-debezium",
)  # fmt: skip
# The Debezium relay beside the direct publish (issue 19): the same PostgreSQL web with a Connect
# worker relaying its outbox instead.
DEBEZIUM = "postgres:up:1::OUTBOX_RELAY=debezium"
WEB_VARIANTS = f"sqlite:up:1,sqlite:down:1,postgres:up:1,postgres:down:1,postgres:up:2,{DEBEZIUM}"
CAPACITY_VARIANTS = f"sqlite:up:1,sqlite:up:2,postgres:up:1,postgres:up:2,{DEBEZIUM}"
# The cluster profile (3 brokers, PostgreSQL, Redis, the registry, 2 copies of each process) with
# each relay: pay -> courier row at 1 order/s, the start-up time and the memory of the whole stack.
CLUSTER_LIVE = ["live_latency.py", "--profile", "cluster", "--production", "--load", "0", "--settle", "20"]
# The highest rate whose order p99 stays under 50 ms (web_bench.py --capacity): steps of 5 s by
# default, the 30 s with --full.
CAPACITY = [
    "--seconds",
    "0",
    "--rate",
    "0",
    "--capacity",
    "--capacity-from",
    "100",
    "--capacity-step",
    "100",
    "--capacity-resolution",
    "25",
]
CAPACITY_GOALS = {("postgres", 1): ">= 150 every round", ("postgres", 2): ">= 300 every round"}
# Per step and size: the script and its arguments ({bootstrap} and {database_url} filled in).
SIZES: dict[str, dict[str, list[str]]] = {
    "tiny": {
        "serialization": ["serialization_bench.py", "--events", "500", "--repeat", "1"],
        "recommendations": ["recommendations_bench.py", "--orders", "500"],
        "consumer": ["consumer_bench.py", "--events", "2000", "--rounds", "1", "--bootstrap", "{bootstrap}",
                     "--variants", "bare,sqlite,quix,quix-json"],
        "replay": ["replay_bench.py", "--events", "2000", "--runs", "1", "--bootstrap", "{bootstrap}"],
        "live": ["live_latency.py", "--orders", "3", "--load", "10", "--backlog", "30"],
        "live-production": ["live_latency.py", "--orders", "3", "--load", "10", "--backlog", "30",
                            "--production"],
        "watchers": ["live_watchers.py", "--orders", "20", "--couriers", "3", "--staff", "1", "--rate", "10",
                     "--seconds", "3"],
        "web": ["web_bench.py", "--variants", "sqlite:down:1", "--seconds", "1", "--rounds", "1", "--rate", "20",
                "--open-seconds", "1"],
        "web-capacity": ["web_bench.py", "--variants", "sqlite:up:1", "--seconds", "0", "--rate", "0", "--capacity",
                         "--capacity-from", "20", "--capacity-step", "20", "--capacity-resolution", "20",
                         "--capacity-max", "40", "--capacity-seconds", "1", "--rounds", "1"],
        "live-cluster": [*CLUSTER_LIVE, "--orders", "3", "--relay", "celery"],
        "live-debezium": [*CLUSTER_LIVE, "--orders", "3", "--relay", "debezium"],
    },
    "default": {
        "serialization": ["serialization_bench.py", "--events", "20000", "--repeat", "3"],
        "recommendations": ["recommendations_bench.py", "--orders", "50000"],
        "consumer": ["consumer_bench.py", "--events", "100000", "--rounds", "3", "--bootstrap", "{bootstrap}",
                     "--variants", "bare,sqlite,quix,quix-json", "--database-url", "{database_url}"],
        "replay": ["replay_bench.py", "--events", "200000", "--runs", "1", "--bootstrap", "{bootstrap}"],
        "live": ["live_latency.py", "--orders", "30", "--load", "100", "--backlog", "1000"],
        "live-production": ["live_latency.py", "--orders", "30", "--load", "100", "--backlog", "1000",
                            "--production"],
        "watchers": ["live_watchers.py", "--orders", "1000", "--couriers", "50", "--staff", "5", "--rate", "100",
                     "--seconds", "30"],
        "web": ["web_bench.py", "--variants", WEB_VARIANTS, "--seconds", "5", "--rounds", "2", "--rate", "150",
                "--open-seconds", "5"],
        "web-capacity": ["web_bench.py", "--variants", CAPACITY_VARIANTS, *CAPACITY, "--capacity-seconds", "5",
                         "--rounds", "2"],
        "live-cluster": [*CLUSTER_LIVE, "--orders", "30", "--relay", "celery"],
        "live-debezium": [*CLUSTER_LIVE, "--orders", "30", "--relay", "debezium"],
    },
    "full": {
        "serialization": ["serialization_bench.py", "--events", "100000", "--repeat", "7"],
        "recommendations": ["recommendations_bench.py", "--orders", "200000"],
        "consumer": ["consumer_bench.py", "--events", "1000000", "--rounds", "3", "--bootstrap", "{bootstrap}",
                     "--variants", "bare,sqlite,quix,quix-json", "--database-url", "{database_url}"],
        "replay": ["replay_bench.py", "--events", "1000000", "--runs", "2", "--bootstrap", "{bootstrap}"],
        "live": ["live_latency.py", "--orders", "60", "--load", "100", "--backlog", "1000"],
        "live-production": ["live_latency.py", "--orders", "60", "--load", "100", "--backlog", "1000",
                            "--production"],
        "watchers": ["live_watchers.py", "--orders", "1000", "--couriers", "50", "--staff", "5", "--rate", "100",
                     "--seconds", "60"],
        "web": ["web_bench.py", "--variants", WEB_VARIANTS, "--seconds", "15", "--rounds", "3", "--rate", "150",
                "--open-seconds", "15"],
        "web-capacity": ["web_bench.py", "--variants", CAPACITY_VARIANTS, *CAPACITY, "--capacity-seconds", "30",
                         "--rounds", "3"],
        "live-cluster": [*CLUSTER_LIVE, "--orders", "60", "--relay", "celery"],
        "live-debezium": [*CLUSTER_LIVE, "--orders", "60", "--relay", "debezium"],
    },
}  # fmt: skip


class Row(dict):
    """One line of the table: key (stable across runs, to find the previous figure), what,
    the figure as text, its number (compared with the previous run), the goal."""

    def __init__(self, key: str, what: str, text: str, value: float | None = None, goal: str = "") -> None:
        super().__init__(key=key, what=what, text=text, value=value, goal=goal)


def spread(figures: dict, digits: int = 2) -> str:
    return f"{figures['median']:.{digits}f} ({figures['min']:.{digits}f}-{figures['max']:.{digits}f})"


def serialization_rows(report: dict) -> list[Row]:
    rows = []
    for fmt, f in report["formats"].items():
        rows.append(
            Row(
                f"serialization.{fmt}",
                f"serialization {fmt}: encode+decode ev/s (bytes, in a zlib batch)",
                f"{f['both_per_s']:,.0f} ({f['bytes']} B, {f['zlib_batch_bytes']:.0f} B)",
                f["both_per_s"],
            )
        )
    return rows


def recommendations_rows(report: dict) -> list[Row]:
    return [
        Row(
            "recommendations.rate",
            f"recommendations projection, batches of {report['batch_size']}: orders/s",
            f"{report['orders_per_s']:,.0f}, counts {'OK' if report['counts_ok'] else 'MISMATCH'}",
            report["orders_per_s"],
        )
    ]


def consumer_rows(report: dict) -> list[Row]:
    variants = report["variants"]
    bare = variants["bare"]
    size = f"{report['events']:,} events, batch {report['batch_size']}"
    rows = [
        Row(
            "consumer.bare",
            f"consumer, {size}: bare loop ev/s, peak RSS",
            f"{bare['rate']['median']:,.0f}, {bare['peak_rss_mb']['median']:.0f} MB",
            bare["rate"]["median"],
        )
    ]
    for name, what in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        if name not in variants:
            continue
        v = variants[name]
        rss = [s["rss_mb"] for s in v.get("samples", [])]
        growth = f", RSS {rss[0]:.0f}->{rss[-1]:.0f} MB over the run" if rss else ""
        rows.append(
            Row(
                f"consumer.{name}.ratio",
                f"consumer, {size}: stats runner on {what} / bare loop (min-max)",
                spread(v["ratio"]),
                v["ratio"]["median"],
                ">= 0.6" if name == "sqlite" else "",
            )
        )
        rows.append(
            Row(
                f"consumer.{name}.rss",
                f"consumer, {size}: stats runner on {what}: ev/s, peak RSS",
                f"{v['rate']['median']:,.0f}, {v['peak_rss_mb']['median']:.0f} MB{growth}",
                v["peak_rss_mb"]["median"],
                "< 150 MB, flat",
            )
        )
    for peer, what in (("quix", "contract.events decode"), ("quix-json", "Quix's JSON, unchecked")):
        if peer not in variants:
            continue
        quix = variants[peer]
        rows.append(
            Row(
                f"consumer.{peer}",
                f"consumer, {size}: Quix Streams peer ({what}): ev/s, steady ev/s, peak RSS",
                f"{quix['rate']['median']:,.0f}, {quix['steady_rate']['median']:,.0f}, "
                f"{quix['peak_rss_mb']['median']:.0f} MB",
                quix["rate"]["median"],
            )
        )
        for name, db in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            if name in variants:
                to = variants[name][f"to_{peer}"]
                rows.append(
                    Row(
                        f"consumer.{name}.{peer}",
                        f"consumer, {size}: stats runner on {db} / {peer}: ev/s, steady ev/s, peak RSS (min-max)",
                        f"{spread(to['rate'])}; {spread(to['steady_rate'])}; {spread(to['peak_rss_mb'])}",
                        to["rate"]["median"],
                        ">= 1.5; >= 1.5; <= 0.33",
                    )
                )
    rows.append(
        Row("consumer.exact", "consumer: exactly-once check", "OK" if report["exactly_once"] else "MISMATCH", goal="OK")
    )
    return rows


def replay_rows(report: dict) -> list[Row]:
    rows = []
    for n, run in enumerate(report["runs"], 1):
        rows.append(
            Row(
                f"replay.{n}",
                f"replay {n} of {report['events']:,} events (consume_stats --replay): s, ev/s",
                f"{run['seconds']:.1f} s, {run['rate']:,.0f}/s, {'exact' if run['exact'] else 'NOT EXACT'}",
                run["rate"],
                "< 60 s for 1,000,000, exact",
            )
        )
    return rows


def live_rows(report: dict) -> list[Row]:
    if report.get("profile") == "cluster":
        return cluster_live_rows(report)
    step = "live-production" if report.get("production") else "live"
    settings = "production" if report.get("production") else "make run's settings"
    rows = []
    for load, goal in (("light", "p95 < 50 ms"), ("loaded", "p95 < 150 ms")):
        rows += latency_rows(report, load, f"{step}.{load}", settings, goal)
    return rows


def latency_rows(report: dict, load: str, key: str, settings: str, goal: str = "") -> list[Row]:
    phase = report[load]
    title = "1 order/s" if load == "light" else f"+{phase.get('background_rate', report['load'])} orders/s"
    paths = (("pay", "pay -> courier row"), ("claim", "claim -> own row"), ("step", "step -> customer status"))
    rows = []
    for path, what in paths:
        f = phase.get(path) or {}
        if not f.get("n"):
            continue  # pay under a backlog: a new order is not among the oldest open ones shown
        rows.append(
            Row(
                f"{key}.{path}",
                f"live latency at {title}, {settings}: {what}, ms p50/p95/max (n)",
                f"{f['p50']:.0f} / {f['p95']:.0f} / {f['max']:.0f} ({f['n']})",
                f["p95"],
                goal,
            )
        )
    return rows


RELAYS = {"celery": "direct publish", "debezium": "Debezium relay"}


def cluster_live_rows(report: dict) -> list[Row]:
    """The cluster profile with one relay: its light-load latencies, start-up and memory."""
    relay = report["relay"]
    settings = f"cluster, {RELAYS[relay]}"
    rows = latency_rows(report, "light", f"live-cluster.{relay}", settings)
    memory = report["memory_after_light"]
    biggest = sorted(memory["parts"].items(), key=lambda part: -part[1]["pss_mb"])[:4]
    rows.append(
        Row(
            f"live-cluster.{relay}.stack",
            f"cluster profile, {RELAYS[relay]}: ready in s; PSS of the whole stack after the orders",
            f"{report['ready_s']:.1f} s; {memory['pss_mb']:,.0f} MB in {memory['processes']:.0f} processes ("
            + ", ".join(f"{name} {part['pss_mb']:.0f}" for name, part in biggest)
            + ")",
            memory["pss_mb"],
        )
    )
    return rows


def watchers_rows(report: dict) -> list[Row]:
    sockets = sum(page["opened"] for page in report["pages"].values())
    title = f"{sockets} watchers, +{report['background_rate']} orders/s"
    rows = []
    for kind, page in report["pages"].items():
        f = page["commit_to_frame_ms"]
        if f.get("n"):
            rows.append(
                Row(
                    f"watchers.{kind}",
                    f"{title}: commit -> frame, {kind} pages ({page['opened']}), ms p50/p95/max",
                    f"{f['p50']:.0f} / {f['p95']:.0f} / {f['max']:.0f}, "
                    f"{page['frames_per_s_per_socket']} frames/s, {page['bytes_per_s_per_socket']} B/s per socket",
                    f["p95"],
                    "p95 < 250 ms",
                )
            )
    dropped = sum(page["dropped"] + page["refused"] for page in report["pages"].values())
    rows.append(Row("watchers.dropped", f"{title}: sockets dropped or refused", str(dropped), dropped, "0"))
    before, opened = report["web_rss_mb_before"][0], report["web_rss_mb_open"][0]
    idle, loaded = report["web_cpu_idle_open"][0], report["web_cpu_under_load"][0]
    per_100 = (opened - before) / max(sockets / 100, 1)
    rows.append(
        Row(
            "watchers.web",
            f"{title}: web process CPU (of one core) idle / under load, RSS per 100 sockets",
            f"{idle * 100:.0f}% / {loaded * 100:.0f}%, {per_100:.1f} MB",
            loaded,
        )
    )
    return rows


def variant_name(v: dict) -> str:
    name = f"{v['database']}, kafka {v['kafka']}, {v['processes']} daphne" + ("s" if v["processes"] > 1 else "")
    return name + (", Debezium relay" if v["env"].get("OUTBOX_RELAY") == "debezium" else "")


def variant_key(step: str, v: dict) -> str:
    key = f"{step}.{v['database']}.{v['kafka']}.{v['processes']}"
    return key + (".debezium" if v["env"].get("OUTBOX_RELAY") == "debezium" else "")


def relay_rows(step: str, report: dict) -> list[Row]:
    """Per variant with Kafka up: did every order the web took reach `orders`, once?"""
    rows = []
    for v in report["variants"]:
        r = v.get("relay")
        if r is None:
            continue
        behind = r["behind_s"]
        rows.append(
            Row(
                f"{variant_key(step, v)}.relayed",
                f"{step} {variant_name(v)}: orders on the topic: lost, doubled; s behind after the load",
                f"{r['lost']}, {r['second_copies']} of {r['orders']:,}; {behind['median']:.1f} "
                f"({behind['min']:.1f}-{behind['max']:.1f}) s",
                r["lost"] + r["second_copies"],
                "0, 0",
            )
        )
    return rows


def relayed_once(report: dict) -> bool:
    return all(v["relay"]["lost"] == 0 == v["relay"]["second_copies"] for v in report["variants"] if "relay" in v)


def web_rows(report: dict) -> list[Row]:
    rows = []
    for v in report["variants"]:
        name = variant_name(v)
        key = variant_key("web", v)
        errors = v["trivial_errors"] + v["order_errors"]
        rows.append(
            Row(
                f"{key}.ratio",
                f"web {name}: orders/trivial req/s, {report['clients']} clients (min-max)",
                f"{spread(v['ratio'])}; {v['order_rps']['median']:.0f}/{v['trivial_rps']['median']:.0f} req/s, "
                f"p99 {v['order_p99']['median']:.0f} ms" + (f", {errors} errors" if errors else ""),
                v["ratio"]["median"],
                ">= 0.5 (aim 0.7)",
            )
        )
        if "open_p99" in v:
            rows.append(
                Row(
                    f"{key}.open",
                    f"web {name}: open loop {report['rate']} orders/s, ms p50/p99/max",
                    f"{v['open_p50']['median']:.1f} / {v['open_p99']['median']:.1f} / {v['open_max']['median']:.0f}"
                    + (f", {v['open_errors']} timed out" if v["open_errors"] else ""),
                    v["open_p99"]["median"],
                    "p99 < 50 ms",
                )
            )
    return rows + relay_rows("web", report)


def web_capacity_rows(report: dict) -> list[Row]:
    c = report["capacity"]
    rows = []
    for v in report["variants"]:
        name = variant_name(v)
        others = [statistics.fmean(step["others_cores"] for step in r["capacity"]["steps"]) for r in v["rounds"]]
        rows.append(
            Row(
                variant_key("web-capacity", v),
                f"web {name}: orders/s with p99 < {c['bound_ms']:g} ms over {c['seconds']:g} s, median (min-max)",
                f"{v['capacity']['median']:.0f} ({v['capacity']['min']:.0f}-{v['capacity']['max']:.0f}); rounds "
                + ", ".join(str(r["capacity"]["rate"]) for r in v["rounds"])
                + "; the rest of the machine used "
                + ", ".join(f"{o:.1f}" for o in others)
                + " cores",
                v["capacity"]["median"],
                CAPACITY_GOALS.get((v["database"], v["processes"]), "") if not v["env"] else "",
            )
        )
    return rows + relay_rows("web-capacity", report)


ROWS: dict[str, Callable[[dict], list[Row]]] = {
    "serialization": serialization_rows,
    "recommendations": recommendations_rows,
    "consumer": consumer_rows,
    "replay": replay_rows,
    "live": live_rows,
    "live-production": live_rows,
    "watchers": watchers_rows,
    "web": web_rows,
    "web-capacity": web_capacity_rows,
    "live-cluster": live_rows,
    "live-debezium": live_rows,
}
EXACT = {  # the exactly-once checks each report carries
    "consumer": lambda r: r["exactly_once"],
    "replay": lambda r: all(run["exact"] for run in r["runs"]),
    "recommendations": lambda r: r["counts_ok"],
    "web": relayed_once,
    "web-capacity": relayed_once,
}


def run_step(name: str, argv: list[str], scratch: Path) -> tuple[dict | None, str, float]:
    """Run one bench script; its report (None if it failed) and the tail of its output."""
    out = scratch / f"{name}.json"
    started = time.monotonic()
    print(f"== {name}: {' '.join(argv)}", flush=True)
    done = subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / argv[0]), *argv[1:], "--json", str(out)],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seconds = time.monotonic() - started
    print(done.stdout.rstrip(), flush=True)
    report = json.loads(out.read_text()) if out.exists() else None
    tail = "\n".join(done.stdout.splitlines()[-5:])
    if done.returncode != 0 and report is None:
        return None, f"exit {done.returncode}: {tail}", seconds
    return report, "", seconds


def previous_result(results: Path) -> tuple[Path | None, dict]:
    """The newest results file, and each row's figure from the newest file that has it: a run
    of some steps only (`--only`) leaves the other rows' previous figures where they were."""
    files = sorted(results.glob("*.json"))
    rows: dict[str, dict] = {}
    for file in files:
        rows.update({row["key"]: row for row in json.loads(file.read_text()).get("rows", [])})
    return (files[-1] if files else None), rows


def print_table(rows: list[Row], previous: dict, previous_name: str) -> None:
    width = max((len(r["what"]) for r in rows), default=20) + 2
    text_width = max((len(r["text"]) for r in rows), default=10) + 2
    print(
        f"{'':<{width}}{'this run':<{text_width}}{'goal':<28}"
        f"previous (the newest run with the row: {previous_name} or before)"
    )
    for row in rows:
        before = previous.get(row["key"], {}).get("text", "")
        print(f"{row['what']:<{width}}{row['text']:<{text_width}}{row['goal']:<28}{before}")


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True)
    return done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the issue's sizes (1,000,000 events; ~1 hour)")
    size.add_argument("--tiny", action="store_true", help="smallest sizes, to check the driver runs")
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--results", type=Path, default=BASE_DIR / "bench" / "results")
    parser.add_argument("--bootstrap", help="a broker for the consumer and replay benches (else one is started)")
    args = parser.parse_args()
    sizes = SIZES["full" if args.full else "tiny" if args.tiny else "default"]
    steps = args.only.split(",") if args.only else list(STEPS)
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    scratch = Path(tempfile.mkdtemp(prefix="foodsite-benchall-"))
    scratch.chmod(0o755)  # PostgreSQL's user must get through it, as root
    broker = postgres = None
    fill = {}
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    rows: list[Row] = []
    failures: list[str] = []
    steps_done: dict[str, dict] = {}
    args.results.mkdir(parents=True, exist_ok=True)
    previous_file, previous = previous_result(args.results)
    out = args.results / f"{started:%Y-%m-%dT%H%M}.json"
    result = {
        "started": started.isoformat(timespec="seconds"),
        "commit": git_commit(),
        "size": "full" if args.full else "tiny" if args.tiny else "default",
        "cpus": os.cpu_count(),
        "rows": rows,
        "failures": failures,
        "steps": steps_done,
    }

    def save() -> None:  # after each step: an interrupted run still leaves what it measured
        result["minutes"] = round((datetime.now(UTC) - started).total_seconds() / 60, 1)
        result["load_average"] = {"before": load_before, "after": os.getloadavg()}
        out.write_text(json.dumps(result, indent=2))

    try:
        needs = {part for step in steps for part in sizes[step]}
        if "{bootstrap}" in needs and args.bootstrap:
            fill["{bootstrap}"] = args.bootstrap
        elif "{bootstrap}" in needs:
            broker = LocalKafka(scratch / "kafka")
            broker.start()
            broker.wait_ready()
            fill["{bootstrap}"] = broker.bootstrap_servers
        if "{database_url}" in needs:
            postgres = LocalPostgres(scratch / "pg")  # durable, as production runs
            postgres.start()
            postgres.wait_ready()
            fill["{database_url}"] = postgres.create_database("bench")
        for step in steps:
            argv = [fill.get(part, part) for part in sizes[step]]
            report, error, seconds = run_step(step, argv, scratch)
            steps_done[step] = {"command": " ".join(argv), "seconds": round(seconds, 1), "report": report}
            if report is None:
                failures.append(f"{step}: {error}")
                rows.append(Row(f"{step}.failed", f"{step}: FAILED", error.splitlines()[-1][:100] if error else ""))
                save()
                continue
            try:
                rows += ROWS[step](report)
            except (KeyError, TypeError, IndexError) as exc:  # a script's report changed shape
                failures.append(f"{step}: figures not understood ({exc!r})")
            if step in EXACT and not EXACT[step](report):
                failures.append(f"{step}: exactly-once check failed")
            save()
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    save()
    print()
    print(
        f"make bench, {result['size']} sizes, commit {result['commit']}, {result['minutes']} min, "
        f"{result['cpus']} CPUs, load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print_table(rows, previous, previous_file.name if previous_file else "none")
    print(f"written to {out.relative_to(BASE_DIR) if out.is_relative_to(BASE_DIR) else out}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
