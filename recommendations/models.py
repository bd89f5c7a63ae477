from django.db import models


class CountedOrder(models.Model):
    """Orders already counted: a duplicate `order.placed` (the outbox may send one twice)
    must not count its pairs again."""

    order_id = models.UUIDField(unique=True)

    def __str__(self) -> str:
        return f"Counted order {self.order_id}"


class DishPair(models.Model):
    """How many orders contained both dishes. Stored in both directions, (a, b) and (b, a),
    so "often ordered with a" is one indexed range read on dish_a."""

    dish_a = models.PositiveIntegerField()
    dish_b = models.PositiveIntegerField()
    orders = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dish_a", "dish_b"], name="one_row_per_dish_pair")]

    def __str__(self) -> str:
        return f"dishes {self.dish_a} and {self.dish_b}: {self.orders} orders"


class PopularBucket(models.Model):
    """Units of a dish ordered in one minute (by the event's time), for "popular now"."""

    dish_id = models.PositiveIntegerField()
    minute = models.DateTimeField()  # truncated to the minute
    units = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dish_id", "minute"], name="one_bucket_per_dish_minute")]
        indexes = [models.Index(fields=["minute"], name="popular_bucket_minute")]

    def __str__(self) -> str:
        return f"dish {self.dish_id} at {self.minute:%H:%M}: {self.units}"
