"""Row-by-row UPDATEs in one round trip, for projections that rewrite many rows per batch."""

from __future__ import annotations

from collections.abc import Sequence

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


def insert_many(model: type[models.Model], fields: list[str], rows: list[tuple]) -> None:
    """INSERT rows (tuples of values for `fields`) with one executemany: bulk_create without
    building a model instance and its SQL per row, which dominated the stats consumer."""
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
    preps = [column.get_db_prep_save for column in columns]
    # None is NULL for every field type: skip the field's conversion chain for it.
    params = [
        [None if value is None else prep(value, connection) for prep, value in zip(preps, row, strict=True)]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
