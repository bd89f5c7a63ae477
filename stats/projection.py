from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from django.db import connections, router

from foodsite.bulk import insert_many, update_many
from foodsite.events import OrderPlaced, PaymentSucceeded
from foodsite.kafka.runner import ConsumedEvent, Projection
from foodsite.kafka.topics import ORDERS, PAYMENTS
from foodsite.live import stats_stream
from stats.models import DishSales, OrdersPerMinute, SalesOrder, SalesTotals

ZERO = Decimal("0")
STATE_FIELDS = ["order_id", "lines", "total", "food_cost", "placed", "paid", "counted", "paid_at"]


class SalesProjection(Projection):
    """Revenue, food cost (so profit) and units sold per dish, counted at payment.

    An order counts once it is both placed and paid, whichever event comes first; its
    SalesOrder row remembers that it was counted, so a duplicate or replayed event changes
    nothing. Lines are kept only while an order waits for its other half. A counted order is
    also added to its minute (OrdersPerMinute), by the time of its payment event."""

    group = "stats"
    topics = (ORDERS, PAYMENTS)
    handles = (OrderPlaced, PaymentSucceeded)

    def reset(self) -> None:
        for model in (SalesOrder, DishSales, SalesTotals, OrdersPerMinute):
            model.objects.all().delete()

    def live_streams(self, events: list[ConsumedEvent]) -> set[str]:
        return {stats_stream()}

    def apply(self, events: list[ConsumedEvent]) -> None:
        placed: dict[UUID, OrderPlaced] = {}
        paid: dict[UUID, datetime] = {}  # order -> when it was paid
        for consumed in events:
            order_id = UUID(consumed.payload.order_id)
            if isinstance(consumed.payload, OrderPlaced):
                placed[order_id] = consumed.payload
            else:
                paid.setdefault(order_id, consumed.event.occurred_at)
        # Tuples, not model instances: thousands of rows per batch.
        known = _known_rows(placed.keys() | paid)

        sales = _Sales()
        new_rows: list[tuple] = []
        now_counted: list[int] = []  # known rows whose other half came in this batch: the usual case
        changed_rows: list[SalesOrder] = []
        for order_id in placed.keys() | paid:
            row = known.get(order_id)
            if row is not None and row.counted:
                continue  # counted already: a duplicate
            order = placed.get(order_id)
            is_placed = order is not None or (row is not None and row.placed)
            is_paid = order_id in paid or (row is not None and row.paid)
            paid_at = paid.get(order_id) or (row.paid_at if row is not None else None)
            if is_placed and is_paid:
                sales.add(order, row, paid_at)
                state = (order_id, [], None, None, True, True, True, None)
            elif order is not None:
                lines = [[ln.dish_id, ln.name, ln.quantity, str(ln.price), str(ln.cost)] for ln in order.lines]
                state = (order_id, lines, order.total, order.food_cost, True, False, False, None)
            else:
                state = (order_id, [], None, None, False, True, False, paid_at)
            if row is None:
                new_rows.append(state)
            elif state[6]:  # counted
                now_counted.append(row.pk)
            else:
                changed_rows.append(SalesOrder(row.pk, *state))

        insert_many(SalesOrder, STATE_FIELDS, new_rows)
        if now_counted:
            SalesOrder.objects.filter(pk__in=now_counted).update(
                lines=[], placed=True, paid=True, counted=True, paid_at=None
            )
        update_many(changed_rows, STATE_FIELDS[1:])
        sales.save()


def _known_rows(order_ids: set[UUID]) -> dict[UUID, _Known]:
    return {
        row[0]: _Known(*row[1:])
        for row in SalesOrder.objects.filter(order_id__in=order_ids).values_list(
            "order_id", "pk", "placed", "paid", "counted", "total", "food_cost", "lines", "paid_at"
        )
    }


class _Known(NamedTuple):
    pk: int
    placed: bool
    paid: bool
    counted: bool
    total: Decimal | None
    food_cost: Decimal | None
    lines: list
    paid_at: datetime | None


class _Sales:
    """The batch's sales, summed in memory and added to the counters in a few UPDATEs."""

    def __init__(self) -> None:
        self.orders = 0
        self.revenue = ZERO
        self.food_cost = ZERO
        self.quantity: Counter[int] = Counter()
        self.dish_revenue: dict[int, Decimal] = {}
        self.dish_cost: dict[int, Decimal] = {}
        self.names: dict[int, str] = {}
        self.per_minute: Counter[datetime] = Counter()

    def add(self, order: OrderPlaced | None, row: _Known | None, paid_at: datetime | None) -> None:
        if order is not None:
            total, cost = order.total, order.food_cost
            lines = [(ln.dish_id, ln.name, ln.quantity, ln.price, ln.cost) for ln in order.lines]
        else:  # placed in an earlier batch: its lines were kept on the row
            total, cost = row.total, row.food_cost
            lines = [(d, n, q, Decimal(p), Decimal(c)) for d, n, q, p, c in row.lines]
        self.orders += 1
        if paid_at is not None:  # always set by this code; None only for rows from before paid_at existed
            self.per_minute[_minute(paid_at)] += 1
        self.revenue += total
        self.food_cost += cost
        for dish_id, name, quantity, price, line_cost in lines:
            self.quantity[dish_id] += quantity
            self.dish_revenue[dish_id] = self.dish_revenue.get(dish_id, ZERO) + price
            self.dish_cost[dish_id] = self.dish_cost.get(dish_id, ZERO) + line_cost
            self.names[dish_id] = name

    def save(self) -> None:
        if not self.orders:
            return
        # One upsert per table: the ORM's get_or_create + one UPDATE per dish cost a
        # query compilation each, per batch.
        _add_to_counters(
            SalesTotals, "id", [(1, {"orders": self.orders, "revenue": self.revenue, "food_cost": self.food_cost})]
        )
        _add_to_counters(
            DishSales,
            "dish_id",
            [
                (
                    dish_id,
                    {
                        "quantity": quantity,
                        "revenue": self.dish_revenue[dish_id],
                        "food_cost": self.dish_cost[dish_id],
                    },
                    {"name": self.names[dish_id]},
                )
                for dish_id, quantity in self.quantity.items()
            ],
        )
        _add_per_minute(self.per_minute)


def _add_to_counters(model: type, key: str, rows: list[tuple]) -> None:
    """Add to counter columns of rows found by `key`, creating missing rows, in one
    executemany: INSERT ... ON CONFLICT (key) DO UPDATE SET n = n + excluded.n (SQLite and
    PostgreSQL). Each row is (key value, {counter: amount}[, {column: value to set}])."""
    if not rows:
        return
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    counters = list(rows[0][1])
    overwritten = list(rows[0][2]) if len(rows[0]) > 2 else []
    names = [key, *counters, *overwritten]
    fields = [meta.get_field(name) for name in names]
    updates = [f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in counters]
    updates += [f"{quote(c)} = excluded.{quote(c)}" for c in overwritten]
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({quote(meta.get_field(key).column)}) DO UPDATE SET {', '.join(updates)}"
    )
    params = []
    for row in rows:
        values = [row[0], *row[1].values(), *(row[2].values() if len(row) > 2 else ())]
        params.append([field.get_db_prep_save(value, connection) for field, value in zip(fields, values, strict=True)])
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _minute(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # an envelope without an offset: the producers write UTC
        return moment.replace(second=0, microsecond=0, tzinfo=UTC)
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _add_per_minute(counts: Counter[datetime]) -> None:
    """Add to each minute's counter in one statement, creating missing minutes: an upsert
    that adds (Django's bulk_create(update_conflicts=True) can only overwrite). SQLite and
    PostgreSQL both speak this ON CONFLICT."""
    if not counts:
        return
    meta = OrdersPerMinute._meta
    connection = connections[router.db_for_write(OrdersPerMinute)]
    quote = connection.ops.quote_name
    minute_field = meta.get_field("minute")
    table, minute, orders = quote(meta.db_table), quote(minute_field.column), quote("orders")
    sql = (
        f"INSERT INTO {table} ({minute}, {orders}) VALUES (%s, %s) "
        f"ON CONFLICT ({minute}) DO UPDATE SET {orders} = {table}.{orders} + excluded.{orders}"
    )
    params = [(minute_field.get_db_prep_save(moment, connection), n) for moment, n in counts.items()]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
