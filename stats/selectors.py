from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from django.db.models import QuerySet
from django.utils import timezone

from stats.models import DishSales, OrdersPerMinute, SalesTotals

CHART_MINUTES = 60
TOP_DISHES = 10


class MinuteCount(NamedTuple):
    minute: datetime  # the minute's start, aware
    orders: int


def sales_totals() -> SalesTotals:
    return SalesTotals.objects.filter(pk=1).first() or SalesTotals(pk=1)


def dish_sales() -> QuerySet[DishSales]:
    return DishSales.objects.order_by("-quantity", "name")


def top_dishes(limit: int = TOP_DISHES) -> list[DishSales]:
    return list(dish_sales()[:limit])


def orders_per_minute(now: datetime | None = None, minutes: int = CHART_MINUTES) -> list[MinuteCount]:
    """Paid orders in each of the last `minutes` minutes up to and including now's, oldest
    first; minutes without orders are there with 0, so a chart's x axis is continuous."""
    end = (now or timezone.now()).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    counts = dict(OrdersPerMinute.objects.filter(minute__gte=start, minute__lte=end).values_list("minute", "orders"))
    return [
        MinuteCount(minute, counts.get(minute, 0)) for minute in (start + timedelta(minutes=i) for i in range(minutes))
    ]
