"""Read paths of the recommendations service, for the menu."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from recommendations.models import DishPair, PopularBucket


class Partner(NamedTuple):
    dish_id: int
    orders: int  # orders that contained both dishes


class Popular(NamedTuple):
    dish_id: int
    units: int


def often_ordered_with(
    dish_ids: Collection[int], limit: int = 3, among: Collection[int] | None = None
) -> dict[int, list[Partner]]:
    """For each dish, the dishes most often in the same order, most first (ties: lower id).
    `among` restricts the partners (e.g. to what is on the menu now)."""
    pairs = DishPair.objects.filter(dish_a__in=dish_ids, orders__gt=0)
    if among is not None:
        pairs = pairs.filter(dish_b__in=among)
    partners: dict[int, list[Partner]] = {}
    for dish_a, dish_b, orders in pairs.order_by("dish_a", "-orders", "dish_b").values_list(
        "dish_a", "dish_b", "orders"
    ):
        found = partners.setdefault(dish_a, [])
        if len(found) < limit:
            found.append(Partner(dish_b, orders))
    return partners


def popular_now(limit: int = 5, among: Collection[int] | None = None) -> list[Popular]:
    """Units per dish ordered in the last RECOMMENDATIONS_POPULAR_WINDOW_MIN minutes, most first."""
    since = timezone.now().replace(second=0, microsecond=0) - timedelta(
        minutes=settings.RECOMMENDATIONS_POPULAR_WINDOW_MIN
    )
    buckets = PopularBucket.objects.filter(minute__gte=since)
    if among is not None:
        buckets = buckets.filter(dish_id__in=among)
    rows = buckets.values("dish_id").annotate(total=Sum("units")).order_by("-total", "dish_id")[:limit]
    return [Popular(row["dish_id"], row["total"]) for row in rows]
