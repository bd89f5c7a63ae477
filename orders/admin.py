from django.contrib import admin

from orders.models import Dish, Order, OrderLine, Payment


@admin.register(Dish)
class DishAdmin(admin.ModelAdmin):
    list_display = ["name", "price", "food_cost", "is_available"]
    list_editable = ["price", "food_cost", "is_available"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    readonly_fields = ["dish", "name", "quantity", "unit_price", "unit_cost"]


class PaymentInline(admin.TabularInline):
    model = Payment
    extra = 0
    readonly_fields = ["amount", "card_last4", "succeeded", "failure_reason", "created_at"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer_name", "total", "status", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["customer_name", "address", "total", "status"]
    inlines = [OrderLineInline, PaymentInline]
