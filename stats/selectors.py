from django.db.models import QuerySet

from stats.models import DishSales, SalesTotals


def sales_totals() -> SalesTotals:
    return SalesTotals.objects.filter(pk=1).first() or SalesTotals(pk=1)


def dish_sales() -> QuerySet[DishSales]:
    return DishSales.objects.order_by("-quantity", "name")
