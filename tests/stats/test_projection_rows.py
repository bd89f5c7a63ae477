"""The stats projection reads and writes its SalesOrder rows with SQL of its own (for speed):
what it stores must be exactly what the ORM would store, and what it reads what the ORM
would read, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from django.db import connection

from contract.events import Event, OrderLine, OrderPlaced, PaymentSucceeded
from eventing.projection import ConsumedEvent
from stats import projection
from stats.models import SalesOrder, SalesTotals
from stats.projection import SalesProjection

pytestmark = [pytest.mark.django_db, pytest.mark.db_write]

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
A, B, C, D, E = (UUID(f"{n:x}" * 32) for n in range(10, 15))
PIZZA = OrderLine(1, "Margherita", 2, Decimal("8.50"), Decimal("2.40"))
SALAD = OrderLine(2, "Insalata", 1, Decimal("6.00"), Decimal("1.75"))


def placed(order_id: UUID, *lines: OrderLine) -> Event:
    total = sum((line.price for line in lines), Decimal("0"))
    return Event(OrderPlaced(str(order_id), "Ada", "Via Roma 1", list(lines), total), occurred_at=T0)


def paid(order_id: UUID, at: datetime) -> Event:
    return Event(PaymentSucceeded(str(order_id), Decimal("1"), "4242"), occurred_at=at)


def apply(*batch: Event) -> None:
    SalesProjection().apply([ConsumedEvent(e.payload.TOPIC, 0, 0, e) for e in batch])


def batches() -> list[list[Event]]:
    return [
        # A and B wait for their payment, C and D (another time zone) for their order; E is complete.
        [
            placed(A, PIZZA, SALAD),
            placed(B, PIZZA),
            paid(C, T0 + timedelta(seconds=5)),
            paid(D, datetime(2026, 11, 25, 11, 30, tzinfo=timezone(timedelta(hours=1)))),
            placed(E, SALAD),
            paid(E, T0),
        ],
        # A and C complete (rows updated to counted); B's order again (a duplicate).
        [paid(A, T0 + timedelta(minutes=1)), placed(C, SALAD), placed(B, PIZZA)],
    ]


COUNTED = {
    "lines": [],
    "total": None,
    "food_cost": None,
    "placed": True,
    "paid": True,
    "counted": True,
    "paid_at": None,
}
EXPECTED = [
    # Counted by an UPDATE, which keeps the money (not read again: `counted`).
    {"order_id": A, **COUNTED, "total": Decimal("23.00"), "food_cost": Decimal("6.55")},
    {
        "order_id": B,
        "lines": [[1, "Margherita", 2, "17.00", "4.80"]],
        "total": Decimal("17.00"),
        "food_cost": Decimal("4.80"),
        "placed": True,
        "paid": False,
        "counted": False,
        "paid_at": None,
    },
    {"order_id": C, **COUNTED},
    {
        "order_id": D,
        "lines": [],
        "total": None,
        "food_cost": None,
        "placed": False,
        "paid": True,
        "counted": False,
        "paid_at": datetime(2026, 11, 25, 10, 30, tzinfo=UTC),
    },
    {"order_id": E, **COUNTED},
]


def orm_rows() -> list[dict]:
    return list(SalesOrder.objects.order_by("order_id").values(*EXPECTED[0]))


def stored_rows() -> list[tuple]:
    """The rows as the database driver returns them, without the ORM's conversions."""
    meta = SalesOrder._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name).column) for name in EXPECTED[0])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {quote(meta.db_table)} ORDER BY {quote('order_id')}")
        return cursor.fetchall()


@pytest.mark.parametrize("max_params", [None, 6], ids=["one-statement", "in-chunks"])
def test_rows_are_stored_as_the_orm_stores_them(monkeypatch, max_params):
    if max_params:  # as if the database took 6 parameters per statement at most
        monkeypatch.setattr(projection, "_max_params", lambda connection: max_params)
    for batch in batches():
        apply(*batch)
    assert orm_rows() == EXPECTED
    totals = SalesTotals.objects.get()
    assert (totals.orders, totals.revenue, totals.food_cost) == (3, Decimal("35.00"), Decimal("10.05"))

    for batch in batches():  # a replay
        apply(*batch)
    assert orm_rows() == EXPECTED
    assert SalesTotals.objects.get().orders == 3

    # The same rows written by the ORM are stored the same, byte for byte.
    stored = stored_rows()
    SalesOrder.objects.all().delete()
    SalesOrder.objects.bulk_create([SalesOrder(**row) for row in EXPECTED])
    assert stored_rows() == stored


def test_known_rows_read_as_the_orm_reads_them():
    apply(*batches()[0])
    ids = {A, B, C, D, E, UUID(int=1)}  # the last one has no row

    known = projection._known_rows(connection, ids)

    orm = {
        row[0]: projection._Known(*row[1:])
        for row in SalesOrder.objects.filter(order_id__in=ids).values_list(*projection.KNOWN_COLUMNS)
    }
    assert set(known) == set(orm) == {A, B, C, D, E}
    for order_id, row in orm.items():
        if row.counted:  # only its pk and flags are used
            assert known[order_id][:4] == row[:4]
        else:
            assert known[order_id] == row
            assert [type(value) for value in known[order_id]] == [type(value) for value in row]
