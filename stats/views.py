from django.contrib.auth.decorators import login_required, user_passes_test
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from stats import selectors


def _staff_only(user: AbstractBaseUser) -> bool:
    # A logged-in non-staff user gets a 403, not a login loop.
    if not user.is_staff:
        raise PermissionDenied("The statistics page is for staff only.")
    return True


@login_required
@user_passes_test(_staff_only)
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request, "stats/dashboard.html", {"totals": selectors.sales_totals(), "dishes": selectors.dish_sales()}
    )
