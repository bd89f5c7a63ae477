from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from django.db.models import F

from foodsite.bulk import insert_many, update_many
from foodsite.events import OrderPlaced, PaymentSucceeded
from foodsite.kafka.runner import ConsumedEvent, Projection
from foodsite.kafka.topics import ORDERS, PAYMENTS
from foodsite.live import stats_stream
from stats.models import DishSales, SalesOrder, SalesTotals

ZERO = Decimal("0")
STATE_FIELDS = ["order_id", "lines", "total", "food_cost", "placed", "paid", "counted"]


class SalesProjection(Projection):
    """Revenue, food cost (so profit) and units sold per dish, counted at payment.

    An order counts once it is both placed and paid, whichever event comes first; its
    SalesOrder row remembers that it was counted, so a duplicate or replayed event changes
    nothing. Lines are kept only while an order waits for its other half."""

    group = "stats"
    topics = (ORDERS, PAYMENTS)
    handles = (OrderPlaced, PaymentSucceeded)

    def reset(self) -> None:
        for model in (SalesOrder, DishSales, SalesTotals):
            model.objects.all().delete()

    def live_streams(self, events: list[ConsumedEvent]) -> set[str]:
        return {stats_stream()}

    def apply(self, events: list[ConsumedEvent]) -> None:
        placed: dict[UUID, OrderPlaced] = {}
        paid: set[UUID] = set()
        for consumed in events:
            order_id = UUID(consumed.payload.order_id)
            if isinstance(consumed.payload, OrderPlaced):
                placed[order_id] = consumed.payload
            else:
                paid.add(order_id)
        # Tuples, not model instances: thousands of rows per batch.
        known = {
            row[0]: _Known(*row[1:])
            for row in SalesOrder.objects.filter(order_id__in=placed.keys() | paid).values_list(
                "order_id", "pk", "placed", "paid", "counted", "total", "food_cost", "lines"
            )
        }

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
            if is_placed and is_paid:
                sales.add(order, row)
                state = (order_id, [], None, None, True, True, True)
            elif order is not None:
                lines = [[ln.dish_id, ln.name, ln.quantity, str(ln.price), str(ln.cost)] for ln in order.lines]
                state = (order_id, lines, order.total, order.food_cost, True, False, False)
            else:
                state = (order_id, [], None, None, False, True, False)
            if row is None:
                new_rows.append(state)
            elif state[-1]:
                now_counted.append(row.pk)
            else:
                changed_rows.append(SalesOrder(row.pk, *state))

        insert_many(SalesOrder, STATE_FIELDS, new_rows)
        if now_counted:
            SalesOrder.objects.filter(pk__in=now_counted).update(lines=[], placed=True, paid=True, counted=True)
        update_many(changed_rows, STATE_FIELDS[1:])
        sales.save()


class _Known(NamedTuple):
    pk: int
    placed: bool
    paid: bool
    counted: bool
    total: Decimal | None
    food_cost: Decimal | None
    lines: list


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

    def add(self, order: OrderPlaced | None, row: _Known | None) -> None:
        if order is not None:
            total, cost = order.total, order.food_cost
            lines = [(ln.dish_id, ln.name, ln.quantity, ln.price, ln.cost) for ln in order.lines]
        else:  # placed in an earlier batch: its lines were kept on the row
            total, cost = row.total, row.food_cost
            lines = [(d, n, q, Decimal(p), Decimal(c)) for d, n, q, p, c in row.lines]
        self.orders += 1
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
        SalesTotals.objects.get_or_create(pk=1)
        SalesTotals.objects.filter(pk=1).update(
            orders=F("orders") + self.orders,
            revenue=F("revenue") + self.revenue,
            food_cost=F("food_cost") + self.food_cost,
        )
        known = set(DishSales.objects.filter(dish_id__in=self.quantity).values_list("dish_id", flat=True))
        DishSales.objects.bulk_create(
            DishSales(dish_id=dish_id, name=self.names[dish_id]) for dish_id in self.quantity if dish_id not in known
        )
        for dish_id, quantity in self.quantity.items():
            DishSales.objects.filter(dish_id=dish_id).update(
                name=self.names[dish_id],
                quantity=F("quantity") + quantity,
                revenue=F("revenue") + self.dish_revenue[dish_id],
                food_cost=F("food_cost") + self.dish_cost[dish_id],
            )
