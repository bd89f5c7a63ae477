from django.db.models import QuerySet

from deliveries.models import Delivery


def deliveries_to_make() -> QuerySet[Delivery]:
    """Placed and paid, not yet delivered; oldest payment first."""
    return Delivery.objects.filter(
        placed_at__isnull=False, paid_at__isnull=False, status=Delivery.Status.TO_DELIVER
    ).order_by("paid_at")
