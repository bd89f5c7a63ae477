from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from deliveries import selectors, services
from deliveries.permissions import COURIER_PERMISSION

OPEN_PER_PAGE = 50


# Pages to read (their forms post to courier_step): another method is a 405, whoever sends it.
@require_safe
@login_required
@permission_required(COURIER_PERMISSION, raise_exception=True)
def courier(request: HttpRequest) -> HttpResponse:
    return render(request, "deliveries/courier.html", courier_page_context(request.user.get_username()))


def courier_page_context(courier: str) -> dict:
    """The courier page: their own deliveries under way, and the oldest open ones to claim."""
    open_shown = list(selectors.open_deliveries()[: selectors.OPEN_ON_COURIER_PAGE])
    count = len(open_shown) if len(open_shown) < selectors.OPEN_ON_COURIER_PAGE else selectors.open_deliveries().count()
    return {
        "mine": list(selectors.deliveries_of_courier(courier)),
        "open_shown": open_shown,
        "open_count": count,
        "open_limit": selectors.OPEN_ON_COURIER_PAGE,
    }


@require_safe
@login_required
@permission_required(COURIER_PERMISSION, raise_exception=True)
def open_deliveries(request: HttpRequest) -> HttpResponse:
    """Every open delivery, a page at a time (not live: the courier page is the live one)."""
    page = Paginator(selectors.open_deliveries(), OPEN_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "deliveries/open_deliveries.html", {"page": page})


@require_POST
@login_required
@permission_required(COURIER_PERMISSION, raise_exception=True)
def courier_step(request: HttpRequest, order_id: UUID, step: str) -> HttpResponse:
    if step not in services.COURIER_STEPS:
        raise Http404(f"No courier step {step!r}.")
    try:
        services.report_courier_step(courier=request.user.get_username(), order_id=order_id, step=step)
    except services.CourierStepRefused as exc:
        context = {**courier_page_context(request.user.get_username()), "error": str(exc)}
        return render(request, "deliveries/courier.html", context, status=409)
    messages.success(request, f"{step.capitalize()}: sent for order {str(order_id)[:8]}.")
    return redirect("courier")
