from django.contrib import admin

from recommendations.models import DishPair


@admin.register(DishPair)
class DishPairAdmin(admin.ModelAdmin):
    list_display = ["dish_a", "dish_b", "orders"]
    ordering = ["dish_a", "-orders"]
    # Written by the recommendations service only (rebuilt by a replay).
    readonly_fields = ["dish_a", "dish_b", "orders"]
