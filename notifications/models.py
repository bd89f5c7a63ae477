from django.db import models


class Notification(models.Model):
    """One message to the customer per (order, kind): the projection's output AND the sent log.

    The unique constraint is what makes a duplicate or replayed event create nothing more,
    and `status` what makes a second delivery of the sending task send nothing. A replay
    keeps these rows (see NotificationProjection.reset): they record emails that left."""

    class Kind(models.TextChoices):
        RECEIVED = "received", "Order received"
        PAID = "paid", "Payment confirmed"
        OUT_FOR_DELIVERY = "out_for_delivery", "Out for delivery"
        DELIVERED = "delivered", "Delivered"

    class Status(models.TextChoices):
        PENDING = "pending", "Sending"
        SENT = "sent", "Emailed"
        NO_EMAIL = "no_email", "Not emailed: no address on the order"
        STALE = "stale", "Not emailed: too old to be news"

    order_id = models.UUIDField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    occurred_at = models.DateTimeField()  # when the event happened
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # A sender's lease: set by the conditional UPDATE that lets one task send, cleared on failure.
    claim = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_to = models.EmailField(blank=True)
    # The trace of the request behind the event (eventing.tracing): the sending task logs under it.
    traceparent = models.CharField(max_length=55, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order_id", "kind"], name="one_notification_per_order_kind")]
        indexes = [models.Index(fields=["status", "created_at"], name="notification_unsent")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for order {self.order_id}"


class Recipient(models.Model):
    """Who an order's notifications go to, from its `order.placed`. Rebuilt by a replay."""

    order_id = models.UUIDField(unique=True)
    customer_name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)  # empty: the customer gave none
    total = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.customer_name} <{self.email}> for order {self.order_id}"
