from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from deliveries.models import Delivery

# The courier page lists the oldest open deliveries, this many, under the courier's own:
# what a courier can act on, not the backlog (the rest: open_deliveries page, paginated).
OPEN_ON_COURIER_PAGE = 20
UNDER_WAY = (Delivery.Status.CLAIMED, Delivery.Status.OUT_FOR_DELIVERY)


def deliveries_to_make() -> QuerySet[Delivery]:
    """Placed and paid, not yet delivered; oldest payment first."""
    return (
        Delivery.objects.filter(placed_at__isnull=False, paid_at__isnull=False)
        .exclude(status=Delivery.Status.DELIVERED)
        .order_by("paid_at")
    )


def open_deliveries() -> QuerySet[Delivery]:
    """Placed and paid, claimed by no courier yet: oldest payment first, so the customer who
    waited longest is served first."""
    return Delivery.objects.filter(
        status=Delivery.Status.TO_DELIVER, placed_at__isnull=False, paid_at__isnull=False
    ).order_by("paid_at", "id")


def deliveries_of_courier(courier: str) -> QuerySet[Delivery]:
    """A courier's deliveries under way (claimed or out for delivery), oldest claim first."""
    return Delivery.objects.filter(courier=courier, status__in=UNDER_WAY).order_by("claimed_at", "id")


def courier_page_ids(couriers: set[str]) -> tuple[list[str], int, dict[str, list[str]]]:
    """What the courier page lists, as order ids: the open deliveries it shows, how many are
    open, and per courier their own under way. The same cut as the page's view."""
    shown = [str(i) for i in open_deliveries().values_list("order_id", flat=True)[:OPEN_ON_COURIER_PAGE]]
    count = len(shown) if len(shown) < OPEN_ON_COURIER_PAGE else open_deliveries().count()
    mine: dict[str, list[str]] = {courier: [] for courier in couriers}
    if couriers:
        under_way = Delivery.objects.filter(courier__in=couriers, status__in=UNDER_WAY).order_by("claimed_at", "id")
        for courier, order_id in under_way.values_list("courier", "order_id"):
            mine[courier].append(str(order_id))
    return shown, count, mine


def deliveries_of_orders(order_ids: set[str]) -> list[Delivery]:
    return list(Delivery.objects.filter(order_id__in=order_ids))


def delivery_of_order(order_id: UUID | str) -> Delivery | None:
    """The delivery service's view of one order, or None if it has not seen the order yet."""
    return Delivery.objects.filter(order_id=order_id).first()
