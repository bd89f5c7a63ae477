"""`make bench`'s driver runs its benchmarks and keeps their exactly-once checks (tiny sizes;
no figure is asserted: benchmarks print figures, tests do not time them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def test_the_driver_runs_the_benches_and_their_exactly_once_checks_hold(kafka_bootstrap, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    # A previous run's file: its figures are printed beside this run's.
    (results / "2000-01-01T0000.json").write_text(
        json.dumps({"rows": [{"key": "consumer.exact", "text": "OK (earlier)"}]})
    )
    done = subprocess.run(
        [sys.executable, "bench/run_all.py", "--tiny", "--only", "consumer,replay,recommendations",
         "--bootstrap", kafka_bootstrap, "--results", str(results)],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = sorted(results.glob("*.json"))[-1]
    assert written.name != "2000-01-01T0000.json"
    result = json.loads(written.read_text())
    assert result["failures"] == []
    rows = {row["key"]: row for row in result["rows"]}
    assert rows["consumer.exact"]["text"] == "OK"
    assert rows["replay.1"]["text"].endswith(", exact")
    assert rows["recommendations.rate"]["text"].endswith("counts OK")
    assert result["steps"]["consumer"]["report"]["exactly_once"] is True
    table = done.stdout.split("make bench, tiny sizes", 1)[1]
    assert "OK (earlier)" in table  # the previous figure beside
