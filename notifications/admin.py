from django.contrib import admin

from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["order_id", "kind", "status", "sent_to", "sent_at", "occurred_at"]
    list_filter = ["kind", "status"]
    search_fields = ["order_id", "sent_to"]
    # Written by the notifications service only.
    readonly_fields = [field.name for field in Notification._meta.fields]
