"""The stats service's job done with Quix Streams, the library a Python user would pick for
stateful exactly-once consumption: the peer that `consumer_bench.py --variants quix` runs
on the same preloaded events as the stats runner.

    python3 bench/quix_peer.py --setup       # create .local/quix-venv (make bench does)
    .local/quix-venv/bin/python bench/quix_peer.py --bootstrap HOST:PORT --orders T --payments T
        --output T --group G --state-dir DIR --events N

It runs in a virtualenv of its own (`.local/quix-venv`, from bench/quix-requirements.txt):
quixstreams 3.28 pins confluent-kafka below 2.13, older than the project's. The job, as the
issue tried it as a new user would: `processing_guarantee="exactly-once"`, the `orders` and
`payments` topics concatenated (co-partitioned by order id, so an order's two events meet
in one partition's state), one state entry per order id in Quix's RocksDB store (the lines
while the order waits for its payment, or "paid" while the payment waits for its order,
then "counted"), one output record per paid order, a checkpoint every 5 s (Quix's
default), every other setting Quix's default. Events are decoded and checked with
`contract.events.decode`, as the stats runner does: the same job, so the difference is
the machinery. `--decode plain-json` (the bench's `quix-json`) reads them with Quix's own
JSON deserializer (orjson) as unchecked dicts instead, as a new user would first write it:
what the contract's checks cost. consumer_bench.py adds up the output topic (read
committed) and checks it against the ground truth, as it does the runner's tables.

Prints one JSON line: events, seconds (first event to the last checkpoint's commit), the
RSS and rate samples and the peak RSS (VmHWM), as the bench's other children do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
QUIX_VENV = BASE_DIR / ".local" / "quix-venv"
REQUIREMENTS = BASE_DIR / "bench" / "quix-requirements.txt"


def quix_python() -> Path:
    """The Quix virtualenv's interpreter, the virtualenv created or brought up to date from
    bench/quix-requirements.txt first (its marker holds the requirements it was made from)."""
    python = QUIX_VENV / "bin" / "python"
    marker = QUIX_VENV / ".installed"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"setting up {QUIX_VENV.relative_to(BASE_DIR)} from {REQUIREMENTS.relative_to(BASE_DIR)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    subprocess.run(pip, check=True)
    marker.write_text(wanted)
    return python


def contract_reader() -> Callable[[Any, list | None], tuple[str, dict | None]]:
    """Events decoded and checked by contract.events, as the stats runner does."""
    from contract.events import OrderPlaced, PaymentSucceeded, decode

    def read(value: bytes, headers: list | None) -> tuple[str, dict | None]:
        content_type = next((v for k, v in headers or () if k == "content-type"), None)
        payload = decode(value, content_type=content_type).payload
        if isinstance(payload, OrderPlaced):
            lines = [[line.dish_id, line.quantity] for line in payload.lines]
            return "placed", {"lines": lines, "total": str(payload.total), "food_cost": str(payload.food_cost)}
        return ("paid" if isinstance(payload, PaymentSucceeded) else "other"), None

    return read


def plain_json_reader() -> Callable[[Any, list | None], tuple[str, dict | None]]:
    """Quix's own JSON deserializer (orjson) and the envelope read as a dict, unchecked: what a
    new user would write first. A malformed event fails the application instead."""

    def read(envelope: dict, headers: list | None) -> tuple[str, dict | None]:
        if envelope["type"] == "order.placed":
            data = envelope["data"]
            lines = [[line["dish_id"], line["quantity"]] for line in data["lines"]]
            food_cost = sum((Decimal(line["unit_cost"]) * line["quantity"] for line in data["lines"]), Decimal("0"))
            return "placed", {"lines": lines, "total": data["total"], "food_cost": str(food_cost)}
        return ("paid" if envelope["type"] == "payment.succeeded" else "other"), None

    return read


def run(args: argparse.Namespace) -> dict:
    from quixstreams import Application, State

    sys.path.insert(0, str(BASE_DIR))  # contract/ (no Django) and the bench's Sampler
    sys.path.insert(0, str(BASE_DIR / "bench"))
    from consumer_bench import Sampler

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=5.0,
        state_dir=args.state_dir,
        loglevel="WARNING",  # its INFO lines are per partition and checkpoint, none per event
    )
    deserializer = "bytes" if args.decode == "contract" else "json"
    orders = app.topic(args.orders, key_deserializer="str", value_deserializer=deserializer)
    payments = app.topic(args.payments, key_deserializer="str", value_deserializer=deserializer)
    output = app.topic(args.output, key_serializer="str", value_serializer="json")
    read = contract_reader() if args.decode == "contract" else plain_json_reader()

    sampler = Sampler(args.events)
    seen = [0]

    def count_paid(value: Any, key: str, timestamp: int, headers: list | None, state: State) -> dict | None:
        """The order's output record once both of its events are in; None until then and for
        every later copy (the state remembers that it counted)."""
        if not seen[0]:
            sampler.start()
        seen[0] += 1
        sampler.seen(seen[0])
        if seen[0] >= args.events:
            app.stop()  # after this event; the last checkpoint is committed on the way out
        kind, order = read(value, headers)
        saved = state.get("order")
        if kind == "placed":
            if saved is None:
                state.set("order", order)
                return None
            if saved.get("paid"):
                state.set("order", {"counted": True})
                return {"order_id": key, **order}
            return None  # a copy, or counted already
        if kind == "paid":
            if saved is None:
                state.set("order", {"paid": True})
                return None
            if "lines" in saved:
                state.set("order", {"counted": True})
                return {"order_id": key, **saved}
        return None  # a copy, counted already, or another event type (skipped, as the runner does)

    sdf = app.dataframe(orders).concat(app.dataframe(payments))
    sdf = sdf.apply(count_paid, stateful=True, metadata=True)
    sdf = sdf.filter(lambda record: record is not None)
    sdf.to_topic(output)
    app.run()
    elapsed, cpu = time.monotonic() - sampler.first, sampler.cpu()
    return {"events": seen[0], "seconds": elapsed, "cpu_seconds": cpu, "samples": sampler.samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", action="store_true", help="create .local/quix-venv and exit")
    parser.add_argument("--bootstrap")
    parser.add_argument("--orders", help="the orders topic's real name")
    parser.add_argument("--payments", help="the payments topic's real name")
    parser.add_argument("--output", help="the topic of one record per paid order")
    parser.add_argument("--group", help="a consumer group of its own")
    parser.add_argument("--state-dir", help="a fresh directory for the RocksDB state")
    parser.add_argument("--events", type=int, help="stop after this many events")
    parser.add_argument(
        "--decode",
        choices=["contract", "plain-json"],
        default="contract",
        help="contract.events.decode (the runner's, the default) or Quix's JSON deserializer, unchecked",
    )
    args = parser.parse_args()
    if args.setup:
        print(quix_python())
        return
    from consumer_bench import peak_rss_mb

    result = run(args)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
