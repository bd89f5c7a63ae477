"""Serialization benchmark: JSON vs Avro for one order.placed event with 3 lines.

    .venv/bin/python bench/serialization_bench.py [--events 20000] [--repeat 5]

Encodes and decodes the same event N times with `contract.events.encode` / `decode` (the
code producers and consumers run, validation included) and prints events/s for encode,
decode and both, and the bytes per event, for each format. The best of --repeat runs
counts. No broker, no database: only the codec. "zlib batch" is the bytes per event of 200
such orders (fresh ids) compressed together at level 1, a stand-in for the producer's lz4
batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import uuid
import zlib
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")


def sample_event():
    from contract.events import Event, OrderLine, OrderPlaced

    lines = [
        OrderLine(1, "Margherita", 2, Decimal("8.50"), Decimal("2.40")),
        OrderLine(4, "Spaghetti alla carbonara", 1, Decimal("11.00"), Decimal("3.10")),
        OrderLine(9, "Tiramisù", 3, Decimal("5.00"), Decimal("1.50")),
    ]
    total = sum((line.price for line in lines), Decimal("0"))
    return Event(
        OrderPlaced(
            order_id="0b9f6c1e-3c5a-4d0e-9a57-2f1f0c8d6e11",
            customer_name="Ada Lovelace",
            address="Via Roma 1, Milano",
            lines=lines,
            total=total,
            email="ada@example.com",
        )
    )


def timed(work, n: int) -> float:
    start = time.perf_counter()
    work(n)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    from contract.events import Event, decode, encode

    event = sample_event()
    works = {}
    sizes = {}
    batch = [Event(dataclasses.replace(event.payload, order_id=str(uuid.uuid4()))) for _ in range(200)]
    for fmt in ("json", "avro"):
        value, content_type = encode(event, fmt)
        assert decode(value, content_type) == event
        compressed = len(zlib.compress(b"".join(encode(e, fmt)[0] for e in batch), 1)) / len(batch)
        sizes[fmt] = (len(value), compressed)

        def encode_n(n: int, fmt: str = fmt) -> None:
            for _ in range(n):
                encode(event, fmt)

        def decode_n(n: int, value: bytes = value, content_type: str = content_type) -> None:
            for _ in range(n):
                decode(value, content_type)

        def both_n(n: int, fmt: str = fmt) -> None:
            for _ in range(n):
                decode(*encode(event, fmt))

        works[fmt] = (encode_n, decode_n, both_n)

    # Rounds alternate the formats, so that a busy machine slows both alike; the best round counts.
    best = {fmt: [float("inf")] * 3 for fmt in works}
    for _ in range(args.repeat):
        for fmt, fmt_works in works.items():
            for i, work in enumerate(fmt_works):
                best[fmt][i] = min(best[fmt][i], timed(work, args.events))

    print(f"order.placed with {len(event.payload.lines)} lines, {args.events:,} events, best of {args.repeat}")
    header = ("format", "bytes/event", "zlib batch", "encode ev/s", "decode ev/s", "both ev/s")
    print("{:<6} {:>11} {:>10} {:>12} {:>12} {:>10}".format(*header))
    report = {"events": args.events, "repeat": args.repeat, "formats": {}}
    for fmt, seconds in best.items():
        rates = [args.events / s for s in seconds]
        size, compressed = sizes[fmt]
        print(f"{fmt:<6} {size:>11} {compressed:>10.0f} {rates[0]:>12,.0f} {rates[1]:>12,.0f} {rates[2]:>10,.0f}")
        report["formats"][fmt] = {
            "bytes": size,
            "zlib_batch_bytes": compressed,
            "encode_per_s": rates[0],
            "decode_per_s": rates[1],
            "both_per_s": rates[2],
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
