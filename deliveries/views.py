from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from deliveries import selectors, services
from deliveries.permissions import COURIER_PERMISSION


@login_required
@permission_required(COURIER_PERMISSION, raise_exception=True)
def courier(request: HttpRequest) -> HttpResponse:
    return render(request, "deliveries/courier.html", {"deliveries": selectors.deliveries_to_make()})


@require_POST
@login_required
@permission_required(COURIER_PERMISSION, raise_exception=True)
def courier_step(request: HttpRequest, order_id: UUID, step: str) -> HttpResponse:
    if step not in services.COURIER_STEPS:
        raise Http404(f"No courier step {step!r}.")
    try:
        services.report_courier_step(courier=request.user.get_username(), order_id=order_id, step=step)
    except services.CourierStepRefused as exc:
        context = {"deliveries": selectors.deliveries_to_make(), "error": str(exc)}
        return render(request, "deliveries/courier.html", context, status=409)
    messages.success(request, f"{step.capitalize()}: sent for order {str(order_id)[:8]}.")
    return redirect("courier")
