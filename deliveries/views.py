from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from deliveries import selectors
from deliveries.permissions import COURIER_PERMISSION


@login_required
@permission_required(COURIER_PERMISSION, raise_exception=True)
def courier(request: HttpRequest) -> HttpResponse:
    return render(request, "deliveries/courier.html", {"deliveries": selectors.deliveries_to_make()})
