"""Row-by-row UPDATEs in one round trip, for projections that rewrite many rows per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from django.db import connections, models, router


def update_many(objs: Sequence[models.Model], fields: list[str]) -> None:
    """Save `fields` of every object with one executemany.

    Django's bulk_update builds a CASE WHEN per field and row: for a 500-event batch it cost
    more than everything else in the consumer together (cProfile, stats projection)."""
    if not objs:
        return
    model = type(objs[0])
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"
    rows = [
        [column.get_db_prep_save(getattr(obj, column.attname), connection) for column in columns]
        + [meta.pk.get_db_prep_save(obj.pk, connection)]
        for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def insert_many(
    model: type[models.Model],
    fields: list[str],
    rows: list[tuple],
    preps: Sequence[Callable[[Any], Any] | None] | None = None,
) -> None:
    """INSERT rows (tuples of values for `fields`): bulk_create without building a model
    instance and its SQL per row, which dominated the stats consumer. On PostgreSQL one
    statement, a column per array (INSERT ... SELECT * FROM UNNEST, as bulk_create does since
    Django 5.2); elsewhere one executemany, a loop in the driver's C (SQLite's).

    `preps`, one per field, turn a value into what the field's get_db_prep_save would pass to
    the driver, for a caller that knows its values' types and can do it cheaper (None: the
    value as it is). Without them each field's get_db_prep_save runs for every value."""
    if not rows:
        return
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    if preps is None:
        preps = [partial(column.get_db_prep_save, connection=connection) for column in columns]
    # Column by column: a column passed as it is costs nothing per value. None is NULL for
    # every field type: skip the field's conversion chain for it.
    values = zip(*rows, strict=True)
    prepared = [
        list(column) if prep is None else [value if value is None else prep(value) for value in column]
        for prep, column in zip(preps, values, strict=True)
    ]
    into = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(c.column) for c in columns)})"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(rows) > 1:
            # psycopg's executemany sends a statement per row, each composed in Python: 500
            # rows took 19 ms, this 8 (a batch of the stats consumer; 14 of its 52 us per event).
            # The array type without its size: varchar[] takes a varchar(50)'s values.
            arrays = ", ".join(f"%s::{column.db_type(connection).split('(')[0]}[]" for column in columns)
            cursor.execute(f"{into} SELECT * FROM UNNEST({arrays})", prepared)
        else:
            cursor.executemany(f"{into} VALUES ({', '.join(['%s'] * len(columns))})", list(zip(*prepared, strict=True)))
