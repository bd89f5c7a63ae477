"""Recommendations projection benchmark: how fast co-occurrence and "popular now" are counted.

    .venv/bin/python bench/recommendations_bench.py [--orders 50000] [--batch-size 1000] [--dishes 30]

No broker: the projection's apply() is called on ready-decoded `order.placed` events in
batches, each in a transaction as the runner does, on a fresh SQLite file. This measures
the projection's own cost (the runner and decoding are measured by consumer_bench.py).
The result is compared with pairs and units counted in Python; exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import combinations
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--dishes", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="recommendations-bench-")
    os.environ["FOODSITE_HOME"] = home
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.db.models import F

    from contract.events import Event, OrderLine, OrderPlaced
    from eventing.projection import ConsumedEvent
    from recommendations.models import DishPair, PopularBucket
    from recommendations.projection import RecommendationProjection

    call_command("migrate", verbosity=0)
    rng = random.Random(7)
    now = datetime.now(UTC)
    events, pairs, units = [], Counter(), Counter()
    for i in range(args.orders):
        dishes = rng.sample(range(1, args.dishes + 1), rng.randint(1, 4))
        lines = [OrderLine(d, f"Dish {d}", rng.randint(1, 3), Decimal("9"), Decimal("3")) for d in dishes]
        # Spread over the last 50 minutes: every order is "popular now".
        at = now - timedelta(seconds=rng.randint(0, 3000))
        payload = OrderPlaced(str(uuid.uuid4()), "Bench", "Via Bench 1", lines, Decimal("9"))
        events.append(ConsumedEvent("orders", 0, i, Event(payload, occurred_at=at)))
        pairs.update(combinations(sorted(dishes), 2))
        for line in lines:
            units[line.dish_id] += line.quantity

    projection = RecommendationProjection()
    started = time.perf_counter()
    for start in range(0, len(events), args.batch_size):
        with transaction.atomic():
            projection.apply(events[start : start + args.batch_size])
    elapsed = time.perf_counter() - started

    one_way = DishPair.objects.filter(dish_a__lt=F("dish_b"))  # each pair is stored both ways
    stored = {(a, b): n for a, b, n in one_way.values_list("dish_a", "dish_b", "orders")}
    stored_units = Counter()
    for dish_id, n in PopularBucket.objects.values_list("dish_id", "units"):
        stored_units[dish_id] += n
    ok = stored == dict(pairs) and stored_units == units
    print(
        f"{args.orders:,} orders in batches of {args.batch_size}: {elapsed:.2f} s, "
        f"{args.orders / elapsed:,.0f} orders/s; {DishPair.objects.count():,} pair rows, "
        f"{PopularBucket.objects.count():,} minute buckets; counts {'OK' if ok else 'MISMATCH'}"
    )
    if args.json:
        report = {
            "orders": args.orders,
            "batch_size": args.batch_size,
            "orders_per_s": args.orders / elapsed,
            "pair_rows": DishPair.objects.count(),
            "counts_ok": ok,
        }
        args.json.write_text(json.dumps(report, indent=2))
    shutil.rmtree(home, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
