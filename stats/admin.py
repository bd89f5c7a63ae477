from django.contrib import admin

from stats.models import DishSales, SalesTotals


@admin.register(DishSales)
class DishSalesAdmin(admin.ModelAdmin):
    list_display = ["name", "quantity", "revenue", "food_cost"]


@admin.register(SalesTotals)
class SalesTotalsAdmin(admin.ModelAdmin):
    list_display = ["orders", "revenue", "food_cost", "profit"]
