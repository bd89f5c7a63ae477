from decimal import Decimal

from django.db import models


class SalesOrder(models.Model):
    """What the stats service knows of one order. Sales count when it is placed AND paid;
    `counted` makes counting happen once, whatever order or how often the events come."""

    order_id = models.UUIDField(unique=True)
    lines = models.JSONField(default=list)  # [[dish_id, name, quantity, price, cost]] until counted
    total = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    food_cost = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    placed = models.BooleanField(default=False)
    paid = models.BooleanField(default=False)
    counted = models.BooleanField(default=False)
    # When the payment happened, kept while the order waits for its order.placed: the sale
    # is bucketed by it (OrdersPerMinute) when it is finally counted.
    paid_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"Sales of order {self.order_id}"


class DishSales(models.Model):
    dish_id = models.PositiveIntegerField(unique=True)
    name = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    food_cost = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))

    class Meta:
        verbose_name_plural = "dish sales"

    def __str__(self) -> str:
        return f"{self.quantity} × {self.name}"

    @property
    def profit(self) -> Decimal:
        return self.revenue - self.food_cost


class SalesTotals(models.Model):
    """A single row (pk=1) with the running totals."""

    orders = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    food_cost = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))

    class Meta:
        verbose_name_plural = "sales totals"

    def __str__(self) -> str:
        return f"{self.orders} orders, revenue {self.revenue}"

    @property
    def profit(self) -> Decimal:
        return self.revenue - self.food_cost


class OrdersPerMinute(models.Model):
    """Paid orders counted per minute of their payment event's time (`occurred_at`, UTC),
    not the minute the consumer happened to read them: a replay or a consumer catching up
    rebuilds the same picture."""

    minute = models.DateTimeField(unique=True)  # the minute's start
    orders = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "orders per minute"

    def __str__(self) -> str:
        return f"{self.orders} orders at {self.minute:%Y-%m-%d %H:%M}"
