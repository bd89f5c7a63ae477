from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from deliveries.permissions import is_courier


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Where a login lands: each role on its own page."""
    if request.user.is_staff:
        return redirect("stats")
    if is_courier(request.user):
        return redirect("courier")
    return redirect("menu")


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
