from django.contrib import admin

from deliveries.models import Delivery


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["order_id", "customer_name", "address", "status", "placed_at", "paid_at"]
    list_filter = ["status"]
