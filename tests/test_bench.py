"""The benchmarks run, and their exactly-once checks hold (no timing is asserted: the figures
are for bench/README.md, not for the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / script), *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_consumer_bench_counts_every_event_once_in_full_batches(kafka_bootstrap, tmp_path):
    results = tmp_path / "consumer.json"
    done = run_bench(
        "consumer_bench.py", "--events", "3000", "--batch-size", "500", "--rounds", "2",
        "--variants", "bare,sqlite,sqlite-debug", "--bootstrap", kafka_bootstrap, "--json", str(results),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(results.read_text())
    assert report["exactly_once"] is True
    for variant in ("sqlite", "sqlite-debug"):
        entry = report["variants"][variant]
        assert len(entry["rate"]["runs"]) == 2
        # The topics hold a backlog: waiting only for a batch's first message must still
        # give whole batches (all but each partition's last one; 6 partitions, 3,000 events).
        assert entry["full_batch_share"]["min"] >= 0.5
        # The DEBUG query log is cleared batch by batch: it never holds a run's worth.
        assert all(sample.get("queries_logged", 0) < 50 for sample in entry["samples"])
        assert entry["ratio"]["min"] > 0  # to the bare loop of the same round
    for row in ("bare loop + decode", "runner, SQLite ", "runner, SQLite, DEBUG on"):
        assert row in done.stdout
    assert "exactly-once check against the produced ground truth: OK" in done.stdout


def test_replay_bench_rebuilds_the_projection_exactly(kafka_bootstrap, tmp_path):
    results = tmp_path / "replay.json"
    done = run_bench(
        "replay_bench.py", "--events", "2000", "--runs", "2", "--bootstrap", kafka_bootstrap, "--json", str(results)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(results.read_text())
    assert [run["exact"] for run in report["runs"]] == [True, True]
    assert all("2,000/2,000 events" in run["last_progress"] for run in report["runs"])
