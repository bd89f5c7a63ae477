from django.contrib import admin

from stats.models import DishSales, OrdersPerMinute, SalesTotals


@admin.register(DishSales)
class DishSalesAdmin(admin.ModelAdmin):
    list_display = ["name", "quantity", "revenue", "food_cost"]


@admin.register(SalesTotals)
class SalesTotalsAdmin(admin.ModelAdmin):
    list_display = ["orders", "revenue", "food_cost", "profit"]


@admin.register(OrdersPerMinute)
class OrdersPerMinuteAdmin(admin.ModelAdmin):
    list_display = ["minute", "orders"]
    ordering = ["-minute"]
