from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required, user_passes_test
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from eventing.kafka_view import KafkaView, kafka_view
from stats import selectors


def _staff_only(user: AbstractBaseUser) -> bool:
    # A logged-in non-staff user gets a 403, not a login loop.
    if not user.is_staff:
        raise PermissionDenied("The statistics page is for staff only.")
    return True


@require_safe  # a page to read: another method is a 405
@login_required
@user_passes_test(_staff_only)
async def dashboard(request: HttpRequest) -> HttpResponse:
    # The Kafka view can wait on the broker for seconds: it waits in a thread of its own, not
    # in the one thread every other page's database work runs in (foodsite.asgi).
    kafka = await sync_to_async(kafka_view_closing_connections, thread_sensitive=False)()
    return await sync_to_async(_render_dashboard)(request, kafka)


def kafka_view_closing_connections(timeout: float | None = None) -> KafkaView:
    """`timeout`: the view's budget (default eventing.kafka_view's)."""
    try:
        return kafka_view() if timeout is None else kafka_view(timeout)
    finally:
        connections.close_all()  # this pool thread's own connection (the view reads offsets)


def _render_dashboard(request: HttpRequest, kafka: KafkaView) -> HttpResponse:
    return render(request, "stats/dashboard.html", dashboard_context(kafka))


def dashboard_context(kafka: KafkaView | None) -> dict:
    """The staff page's figures (the page's view and its socket, stats.sockets)."""
    per_minute = selectors.orders_per_minute()
    top = selectors.top_dishes()
    counts = [row.orders for row in per_minute]
    return {
        "totals": selectors.sales_totals(),
        "dishes": selectors.dish_sales(),
        # The charts' data, read by stats/dashboard.js from json_script elements.
        "per_minute_chart": {
            "labels": [timezone.localtime(row.minute).strftime("%H:%M") for row in per_minute],
            "orders": counts,
        },
        "per_minute_total": sum(counts),
        "per_minute_peak": max(counts, default=0),
        "chart_minutes": selectors.CHART_MINUTES,
        "top_chart": {"labels": [dish.name for dish in top], "quantities": [dish.quantity for dish in top]},
        "kafka": kafka,
    }
