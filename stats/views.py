from django.contrib.auth.decorators import login_required, user_passes_test
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from stats import selectors
from stats.kafka_view import kafka_view


def _staff_only(user: AbstractBaseUser) -> bool:
    # A logged-in non-staff user gets a 403, not a login loop.
    if not user.is_staff:
        raise PermissionDenied("The statistics page is for staff only.")
    return True


@login_required
@user_passes_test(_staff_only)
def dashboard(request: HttpRequest) -> HttpResponse:
    per_minute = selectors.orders_per_minute()
    top = selectors.top_dishes()
    counts = [row.orders for row in per_minute]
    return render(
        request,
        "stats/dashboard.html",
        {
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
            "kafka": kafka_view(),
        },
    )
