from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from itertools import permutations
from uuid import UUID

from django.conf import settings
from django.db import connections, models, router
from django.utils import timezone

from contract.events import OrderPlaced
from eventing.projection import ConsumedEvent, Projection
from eventing.registry import register
from eventing.topics import ORDERS
from recommendations.models import CountedOrder, DishPair, PopularBucket


@register
class RecommendationProjection(Projection):
    """Which dishes are ordered together, and which are ordered most right now.

    Co-occurrence: an order with distinct dishes {a, b, c} adds 1 to the pairs (a, b),
    (a, c), (b, c), each stored in both directions. Counted at `order.placed` (what people
    choose together, paid or not), once per order (CountedOrder). "Popular now": units per
    dish per minute of the event's time; buckets older than the window are dropped."""

    group = "recommendations"
    topics = (ORDERS,)
    handles = (OrderPlaced,)

    def reset(self) -> None:
        for model in (CountedOrder, DishPair, PopularBucket):
            model.objects.all().delete()

    def apply(self, events: list[ConsumedEvent]) -> None:
        orders = {UUID(e.payload.order_id): e for e in events}
        seen = set(CountedOrder.objects.filter(order_id__in=orders).values_list("order_id", flat=True))
        new = {order_id: e for order_id, e in orders.items() if order_id not in seen}
        if not new:
            return
        cutoff = _minute(timezone.now()) - timedelta(minutes=settings.RECOMMENDATIONS_POPULAR_WINDOW_MIN)
        pairs: Counter[tuple[int, int]] = Counter()
        units: Counter[tuple[int, datetime]] = Counter()
        for consumed in new.values():
            lines = consumed.payload.lines
            pairs.update(permutations(sorted({line.dish_id for line in lines}), 2))
            minute = _minute(consumed.event.occurred_at)
            if minute >= cutoff:  # a replay's old orders are history, not "now"
                for line in lines:
                    units[(line.dish_id, minute)] += line.quantity
        CountedOrder.objects.bulk_create(CountedOrder(order_id=order_id) for order_id in new)
        _add(DishPair, ["dish_a", "dish_b"], "orders", pairs)
        _add(PopularBucket, ["dish_id", "minute"], "units", units)
        PopularBucket.objects.filter(minute__lt=cutoff).delete()


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _add(model: type[models.Model], keys: list[str], counter: str, amounts: Counter) -> None:
    """counter += amount per key, inserting missing rows: one executemany of
    INSERT … ON CONFLICT DO UPDATE (SQLite and PostgreSQL). bulk_create(update_conflicts)
    cannot add, only overwrite, and a read-then-write per row costs a query per row."""
    if not amounts:
        return
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in (*keys, counter)]
    table, column = quote(meta.db_table), quote(fields[-1].column)
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({', '.join(quote(f.column) for f in fields[:-1])}) "
        f"DO UPDATE SET {column} = {table}.{column} + excluded.{column}"
    )
    # In key order: on PostgreSQL each row is locked as the upsert reaches it, and two copies of
    # the service meeting the same rows in different orders would deadlock (tested).
    params = [
        [field.get_db_prep_save(value, connection) for field, value in zip(fields, (*key, amount), strict=True)]
        for key, amount in sorted(amounts.items())
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
