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
    """INSERT rows (tuples of values for `fields`) with one executemany: bulk_create without
    building a model instance and its SQL per row, which dominated the stats consumer.

    `preps`, one per field, turn a value into what the field's get_db_prep_save would pass to
    the driver, for a caller that knows its values' types and can do it cheaper (None: the
    value as it is). Without them each field's get_db_prep_save runs for every value."""
    if not rows:
        return
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(c.column) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    if preps is None:
        preps = [partial(column.get_db_prep_save, connection=connection) for column in columns]
    # Column by column: a column passed as it is costs nothing per value. None is NULL for
    # every field type: skip the field's conversion chain for it.
    values = zip(*rows, strict=True)
    prepared = [
        column if prep is None else [value if value is None else prep(value) for value in column]
        for prep, column in zip(preps, values, strict=True)
    ]
    params = list(zip(*prepared, strict=True))
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
