"""How much write-ahead log the Debezium outbox relay's replication slot holds during an idle period.

No order comes in for `--minutes`; another table of the same server writes `--filler-kb` of WAL
a minute (what other databases, autovacuum and checkpoints do on a real server). PostgreSQL keeps
every segment of WAL a slot has not confirmed, so a relay whose slot never moves fills the disk
while the shop is quiet. Beside the connector's slot, a control slot that nobody reads shows
what the heartbeat prevents. Prints the retained WAL of both (pg_current_wal_lsn - restart_lsn)
every `--every` seconds, then before/after/largest.

    .venv/bin/python bench/outbox_idle_wal.py --minutes 60 --heartbeat-ms 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from devstack.kafka_connect import LocalConnect  # noqa: E402
from devstack.kafka_node import LocalKafka  # noqa: E402
from devstack.postgres_server import LocalPostgres  # noqa: E402

CONTROL_SLOT = "idle_control"


def retained(cursor, slot: str) -> int:
    cursor.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s",
        [slot],
    )
    return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--heartbeat-ms", type=int, default=2000, help="shortened from OUTBOX_HEARTBEAT_MS's 10 s")
    parser.add_argument("--filler-kb", type=int, default=1024, help="WAL another table writes a minute")
    parser.add_argument("--every", type=float, default=60, help="seconds between samples")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home = Path(tempfile.mkdtemp(prefix="foodsite-idlewal-"))
    home.chmod(0o755)  # PostgreSQL's user must get through it, as root
    broker = LocalKafka(home / "kafka")
    postgres = LocalPostgres(home / "pg")
    worker = None
    try:
        broker.start()
        postgres.start()
        postgres.wait_ready()
        url = postgres.create_database("idle")
        broker.wait_ready()
        os.environ.update(
            {
                "DATABASE_URL": url,
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "OUTBOX_RELAY": "debezium",
                "FOODSITE_HOME": str(home),
                "LOG_LEVEL": "WARNING",
            }
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, check=True, capture_output=True
        )
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
        import django

        django.setup()
        from django.db import connection

        from eventing import debezium

        worker = LocalConnect(home / "connect", broker.bootstrap_servers)
        worker.start()
        worker.wait_ready(timeout=120)
        debezium.register(worker.url, config=debezium.connector_config(heartbeat_ms=args.heartbeat_ms))
        debezium.wait_running(worker.url, timeout=120)
        slot = debezium.slot_name()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [CONTROL_SLOT])
            cursor.execute("CREATE TABLE wal_filler (id serial PRIMARY KEY, padding text)")
            time.sleep(args.heartbeat_ms / 1000 * 3)  # the connector's first heartbeats
            samples = []
            started = time.monotonic()
            per_sample_rows = max(1, int(args.filler_kb * args.every / 60))  # ~1 kB of WAL a row
            while True:
                elapsed = time.monotonic() - started
                sample = {
                    "minute": round(elapsed / 60, 1),
                    "connector_slot_bytes": retained(cursor, slot),
                    "control_slot_bytes": retained(cursor, CONTROL_SLOT),
                    "connector": debezium.status(worker.url)["connector"],
                }
                samples.append(sample)
                held, unread = sample["connector_slot_bytes"] / 1024, sample["control_slot_bytes"] / 1024
                print(
                    f"{sample['minute']:6.1f} min: connector's slot holds {held:9.0f} kB, "
                    f"an unread slot {unread:9.0f} kB ({sample['connector']})",
                    flush=True,
                )
                if elapsed >= args.minutes * 60:
                    break
                cursor.execute(
                    "INSERT INTO wal_filler (padding) SELECT repeat('x', 900) FROM generate_series(1, %s)",
                    [per_sample_rows],
                )
                time.sleep(max(0.0, started + len(samples) * args.every - time.monotonic()))
            from eventing.models import OutboxEvent

            beats = OutboxEvent.objects.filter(event_type=debezium.HEARTBEAT_TYPE).count()
            cursor.execute("SELECT pg_drop_replication_slot(%s)", [CONTROL_SLOT])
        connector = [s["connector_slot_bytes"] for s in samples]
        report = {
            "minutes": args.minutes,
            "heartbeat_ms": args.heartbeat_ms,
            "filler_kb_per_minute": args.filler_kb,
            "heartbeat_rows": beats,
            "connector_slot_bytes": {"first": connector[0], "last": connector[-1], "max": max(connector)},
            "control_slot_bytes": {
                "first": samples[0]["control_slot_bytes"],
                "last": samples[-1]["control_slot_bytes"],
            },
            "samples": samples,
        }
        print(
            f"\nafter {args.minutes:g} idle minutes ({args.filler_kb} kB of other WAL a minute, heartbeat "
            f"{args.heartbeat_ms} ms, {beats} heartbeat rows): the connector's slot held "
            f"{connector[0] / 1024:.0f} kB at the start, {connector[-1] / 1024:.0f} kB at the end, "
            f"{max(connector) / 1024:.0f} kB at most; a slot nobody reads grew to "
            f"{samples[-1]['control_slot_bytes'] / 1024:.0f} kB"
        )
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
