from django.db import models


class Delivery(models.Model):
    """The delivery service's own view of an order, built only from events.

    `order.placed` and `payment.succeeded` are read from two topics and may arrive in
    either order, so both fill in the same row."""

    class Status(models.TextChoices):
        TO_DELIVER = "to_deliver", "To deliver"
        CLAIMED = "claimed", "Claimed"
        OUT_FOR_DELIVERY = "out_for_delivery", "Out for delivery"
        DELIVERED = "delivered", "Delivered"

    order_id = models.UUIDField(unique=True)
    customer_name = models.CharField(max_length=100, blank=True)
    address = models.CharField(max_length=300, blank=True)
    items = models.JSONField(default=list)  # [{"name": ..., "quantity": ...}]
    total = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    placed_at = models.DateTimeField(null=True)
    paid_at = models.DateTimeField(null=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.TO_DELIVER)
    # From the couriers' delivery-status events; the first claim in the log wins.
    courier = models.CharField(max_length=150, blank=True)
    claimed_at = models.DateTimeField(null=True)
    picked_up_at = models.DateTimeField(null=True)
    delivered_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [("work_as_courier", "Can see and work the courier page")]
        # The courier page's two lists (deliveries.selectors): the oldest open ones, and a
        # courier's own under way, read at every round of changes however long the backlog.
        indexes = [
            models.Index(fields=["status", "paid_at"], name="delivery_open_by_payment"),
            models.Index(fields=["courier", "status"], name="delivery_courier_status"),
        ]

    def __str__(self) -> str:
        return f"Delivery of order {self.order_id}"
