from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from uuid import UUID

from django.db.models import F

from foodsite.bulk import update_many
from foodsite.events import OrderPlaced, PaymentSucceeded
from foodsite.kafka.runner import ConsumedEvent, Projection
from foodsite.kafka.topics import ORDERS, PAYMENTS
from stats.models import DishSales, SalesOrder, SalesTotals


class SalesProjection(Projection):
    """Revenue, food cost (so profit) and units sold per dish, counted at payment."""

    group = "stats"
    topics = (ORDERS, PAYMENTS)
    handles = (OrderPlaced, PaymentSucceeded)

    def reset(self) -> None:
        for model in (SalesOrder, DishSales, SalesTotals):
            model.objects.all().delete()

    def apply(self, events: list[ConsumedEvent]) -> None:
        order_ids = {UUID(e.payload.order_id) for e in events}
        orders = SalesOrder.objects.in_bulk(order_ids, field_name="order_id")
        new: dict[UUID, SalesOrder] = {}
        for consumed in events:
            order_id = UUID(consumed.payload.order_id)
            order = orders.get(order_id) or new.setdefault(order_id, SalesOrder(order_id=order_id))
            payload = consumed.payload
            if isinstance(payload, OrderPlaced):
                order.placed = True
                order.total = payload.total
                order.food_cost = payload.food_cost
                order.lines = [
                    {
                        "dish_id": ln.dish_id,
                        "name": ln.name,
                        "quantity": ln.quantity,
                        "price": str(ln.price),
                        "cost": str(ln.cost),
                    }
                    for ln in payload.lines
                ]
            else:
                order.paid = True

        # Sum the batch in memory, then add it to the counters in a few UPDATEs.
        totals = {"orders": 0, "revenue": Decimal("0"), "food_cost": Decimal("0")}
        dishes: dict[int, dict] = defaultdict(
            lambda: {"quantity": 0, "revenue": Decimal("0"), "food_cost": Decimal("0")}
        )
        names: dict[int, str] = {}
        for order in [*orders.values(), *new.values()]:
            if order.placed and order.paid and not order.counted:
                order.counted = True
                totals["orders"] += 1
                totals["revenue"] += order.total
                totals["food_cost"] += order.food_cost
                for line in order.lines:
                    delta = dishes[line["dish_id"]]
                    delta["quantity"] += line["quantity"]
                    delta["revenue"] += Decimal(line["price"])
                    delta["food_cost"] += Decimal(line["cost"])
                    names[line["dish_id"]] = line["name"]

        SalesOrder.objects.bulk_create(new.values())
        if orders:
            update_many(list(orders.values()), ["lines", "total", "food_cost", "placed", "paid", "counted"])
        if totals["orders"]:
            SalesTotals.objects.get_or_create(pk=1)
            SalesTotals.objects.filter(pk=1).update(**{k: F(k) + v for k, v in totals.items()})
        known = set(DishSales.objects.filter(dish_id__in=dishes).values_list("dish_id", flat=True))
        DishSales.objects.bulk_create(DishSales(dish_id=d, name=names[d]) for d in dishes if d not in known)
        for dish_id, delta in dishes.items():
            DishSales.objects.filter(dish_id=dish_id).update(
                name=names[dish_id], **{k: F(k) + v for k, v in delta.items()}
            )
