from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple
from uuid import UUID

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Field

from contract.events import OrderPlaced, PaymentSucceeded
from eventing.bulk import insert_many, update_many
from eventing.projection import ConsumedEvent, Projection
from eventing.registry import register
from eventing.topics import ORDERS, PAYMENTS
from live.notices import Changes, stats_stream
from stats.models import DishSales, OrdersPerMinute, SalesOrder, SalesTotals

ZERO = Decimal("0")
STATE_FIELDS = ["order_id", "lines", "total", "food_cost", "placed", "paid", "counted", "paid_at"]


@register
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

    def live_changes(self, events: list[ConsumedEvent]) -> Changes:
        return {stats_stream(): None}  # every figure of the page may move: the whole page

    def apply(self, events: list[ConsumedEvent]) -> None:
        placed: dict[UUID, OrderPlaced] = {}
        paid: dict[UUID, datetime] = {}  # order -> when it was paid
        for consumed in events:
            order_id = UUID(consumed.payload.order_id)
            if isinstance(consumed.payload, OrderPlaced):
                placed[order_id] = consumed.payload
            else:
                paid.setdefault(order_id, consumed.event.occurred_at)
        order_ids = placed.keys() | paid
        connection = connections[router.db_for_write(SalesOrder)]
        # Tuples, not model instances: thousands of rows per batch.
        known = _known_rows(connection, order_ids)

        sales = _Sales()
        new_rows: list[tuple] = []
        now_counted: list[int] = []  # known rows whose other half came in this batch: the usual case
        changed_rows: list[SalesOrder] = []
        for order_id in order_ids:
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

        insert_many(SalesOrder, STATE_FIELDS, new_rows, _state_preps(connection))
        _mark_counted(connection, now_counted)
        update_many(changed_rows, STATE_FIELDS[1:])
        sales.save()


# The SalesOrder rows of a batch's orders are read and written with SQL of our own, not the
# ORM's: for ~1000 orders per batch, preparing every id and value through its field and
# converting every column read was a third of the consumer's time (py-spy, SQLite). What
# goes in is still what the fields' get_db_prep_save gives, what comes out what the fields'
# converters give (tests/stats/test_projection_rows.py compares with the ORM).


def _known_rows(connection: BaseDatabaseWrapper, order_ids: Iterable[UUID]) -> dict[UUID, _Known]:
    """The batch's orders that have a row already, by order id. Only a row not counted yet
    has its money, lines and paid_at read: a counted one's other columns are never used."""
    meta = SalesOrder._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name).column) for name in KNOWN_COLUMNS)
    select = f"SELECT {columns} FROM {quote(meta.db_table)} WHERE "
    # Ids go in, and come back, in the form the database stores them: map it back.
    stored = _stored_uuid(connection)
    by_stored = {stored(order_id): order_id for order_id in order_ids}
    read_total, read_food_cost, read_lines, read_paid_at = (
        _converter(connection, meta.get_field(name)) for name in ("total", "food_cost", "lines", "paid_at")
    )
    known: dict[UUID, _Known] = {}
    with connection.cursor() as cursor:
        for where, params in _among(connection, meta.get_field("order_id"), list(by_stored)):
            cursor.execute(select + where, params)
            for order_id, pk, placed, paid, counted, total, food_cost, lines, paid_at in cursor.fetchall():
                if counted:
                    row = _Known(pk, placed, paid, counted, None, None, [], None)
                else:
                    row = _Known(
                        pk,
                        placed,
                        paid,
                        counted,
                        read_total(total),
                        read_food_cost(food_cost),
                        read_lines(lines),
                        None if paid_at is None else read_paid_at(paid_at),  # None but for orders paid first
                    )
                known[by_stored[order_id]] = row
    return known


KNOWN_COLUMNS = ["order_id", "id", "placed", "paid", "counted", "total", "food_cost", "lines", "paid_at"]


class _Known(NamedTuple):
    pk: int
    placed: bool  # bools, or 0/1 from some drivers: only tested for truth
    paid: bool
    counted: bool
    total: Decimal | None
    food_cost: Decimal | None
    lines: list
    paid_at: datetime | None


def _mark_counted(connection: BaseDatabaseWrapper, pks: list[int]) -> None:
    """What SalesOrder.objects.filter(pk__in=pks).update(lines=[], placed=True, paid=True,
    counted=True, paid_at=None) writes, without compiling the query and preparing every pk."""
    if not pks:
        return
    meta = SalesOrder._meta
    quote = connection.ops.quote_name
    column = {name: quote(meta.get_field(name).column) for name in ("lines", "placed", "paid", "counted", "paid_at")}
    update = (
        f"UPDATE {quote(meta.db_table)} SET {column['lines']} = %s, {column['placed']} = %s, "
        f"{column['paid']} = %s, {column['counted']} = %s, {column['paid_at']} = NULL WHERE "
    )
    values = [meta.get_field("lines").get_db_prep_save([], connection), True, True, True]
    with connection.cursor() as cursor:
        for where, params in _among(connection, meta.pk, pks, reserved=len(values)):
            cursor.execute(update + where, [*values, *params])


def _state_preps(connection: BaseDatabaseWrapper) -> list[Callable[[Any], Any] | None]:
    """For insert_many: each STATE_FIELDS value as its field's get_db_prep_save would give it,
    skipping the checks and conversions the values this projection writes do not need."""
    meta = SalesOrder._meta
    money = meta.get_field("total")
    decimal: Callable[[Any], Any] | None = None  # total, food_cost: Decimals, passed as they are...
    if type(connection.ops).adapt_decimalfield_value is not BaseDatabaseOperations.adapt_decimalfield_value:
        # ...unless the backend changes them (SQLite and PostgreSQL do not).
        decimal = partial(
            connection.ops.adapt_decimalfield_value, max_digits=money.max_digits, decimal_places=money.decimal_places
        )
    return [
        _stored_uuid(connection),  # order_id: a UUID
        _lines_prep(connection),
        decimal,
        decimal,
        None,  # placed, paid, counted: bools, as they are
        None,
        None,
        _paid_at_prep(connection),
    ]


def _lines_prep(connection: BaseDatabaseWrapper) -> Callable[[list], Any]:
    """lines (a list) as JSONField.get_db_prep_save gives it; the empty list of every order
    paid before it was placed encoded once per batch, not once per row."""
    adapt = partial(connection.ops.adapt_json_value, encoder=SalesOrder._meta.get_field("lines").encoder)
    empty = adapt([])
    return lambda lines: adapt(lines) if lines else empty


def _paid_at_prep(connection: BaseDatabaseWrapper) -> Callable[[datetime], Any]:
    """paid_at as DateTimeField.get_db_prep_save gives it. Its get_prep_value leaves an aware
    datetime as it is (it only makes a naive one aware, with a warning), so an aware one goes
    straight to the backend's adapter: every order paid before it was placed has one, and the
    field's checks were 4% of the consumer's time (py-spy, 100,000 events)."""
    save = partial(SalesOrder._meta.get_field("paid_at").get_db_prep_save, connection=connection)
    adapt = connection.ops.adapt_datetimefield_value

    def prep(value: datetime) -> Any:
        return adapt(value) if value.utcoffset() is not None else save(value)

    return prep


def _stored_uuid(connection: BaseDatabaseWrapper) -> Callable[[UUID], Any]:
    """What UUIDField.get_db_prep_value gives for a UUID: itself where the database has a
    uuid type (PostgreSQL), else its 32 hex digits (SQLite's char(32))."""
    if connection.features.has_native_uuid_field:
        return _itself
    return attrgetter("hex")


def _itself(value: Any) -> Any:
    return value


def _converter(connection: BaseDatabaseWrapper, field: Field) -> Callable[[Any], Any]:
    """A column's value as the ORM reads it: the backend's converters, then the field's."""
    column = field.get_col(field.model._meta.db_table)
    converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
    if not converters:
        return _itself
    if len(converters) == 1:  # the usual case: one call less per value
        return partial(converters[0], expression=column, connection=connection)

    def convert(value: Any) -> Any:
        for converter in converters:
            value = converter(value, column, connection)
        return value

    return convert


def _among(
    connection: BaseDatabaseWrapper, field: Field, values: list, reserved: int = 0
) -> Iterable[tuple[str, list]]:
    """`column IN (...)` conditions on `values` (as stored), with their parameters: on
    PostgreSQL one `= ANY(array)`, since an IN list of 1000 literals is composed, sent and
    parsed as 1000 (psycopg binds on the client); elsewhere as many IN lists as the database
    takes parameters (`reserved`: the statement's other parameters)."""
    column = connection.ops.quote_name(field.column)
    if connection.vendor == "postgresql":
        yield f"{column} = ANY(%s::{field.db_type(connection).split('(')[0]}[])", [values]
        return
    limit = _max_params(connection)
    for chunk in _chunks(values, limit and limit - reserved):
        yield f"{column} IN ({', '.join(['%s'] * len(chunk))})", chunk


def _max_params(connection: BaseDatabaseWrapper) -> int | None:
    """How many parameters one statement may have (None: no limit that matters here)."""
    if connection.vendor == "sqlite":
        # Django says 999, SQLite's limit before 3.32; the library knows its own (32766 since).
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return connection.features.max_query_params


def _chunks(values: list, size: int | None) -> Iterable[list]:
    """`values` in lists of at most `size` (None: all in one)."""
    size = max(size or len(values), 1)
    for start in range(0, len(values), size):
        yield values[start : start + size]


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
            lines = [(ln.dish_id, ln.name, ln.quantity, ln.price, ln.cost) for ln in order.lines]
            # OrderPlaced.food_cost, from the line costs just computed rather than again.
            total, cost = order.total, sum((line[4] for line in lines), ZERO)
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
