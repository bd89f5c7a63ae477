from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from orders import selectors, services
from orders.forms import OrderForm, PaymentForm
from orders.models import Order


@require_http_methods(["GET", "POST"])
def menu(request: HttpRequest) -> HttpResponse:
    dishes = list(selectors.menu())
    form = OrderForm(request.POST or None, dishes=dishes)
    if request.method == "POST":
        if form.is_valid():
            try:
                order = services.place_order(
                    customer_name=form.cleaned_data["customer_name"],
                    address=form.cleaned_data["address"],
                    items=form.cleaned_data["items"],
                    idempotency_key=form.cleaned_data["idempotency_key"],
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                _remember_order(request, order)
                return redirect("order-detail", order_id=order.pk)
        return render(request, "orders/menu.html", {"form": form}, status=400)
    return render(request, "orders/menu.html", {"form": form})


def order_detail(request: HttpRequest, order_id: str) -> HttpResponse:
    order = _customer_order(request, order_id)
    if not isinstance(order, Order):
        return order
    form = PaymentForm() if order.status == Order.Status.PLACED else None
    return render(request, "orders/order_detail.html", {"order": order, "form": form})


@require_POST
def pay(request: HttpRequest, order_id: str) -> HttpResponse:
    order = _customer_order(request, order_id)
    if not isinstance(order, Order):
        return order
    form = PaymentForm(request.POST)
    if form.is_valid():
        try:
            payment = services.pay_order(order=order, card=form.card())
        except services.OrderNotPayable as exc:
            return render(request, "orders/order_detail.html", {"order": order, "error": str(exc)}, status=409)
        if payment.succeeded:
            return redirect("order-detail", order_id=order.pk)
        form.add_error(None, payment.failure_reason)
        return render(request, "orders/order_detail.html", {"order": order, "form": form}, status=402)
    return render(request, "orders/order_detail.html", {"order": order, "form": form}, status=400)


def _customer_order(request: HttpRequest, order_id: str) -> Order | HttpResponse:
    order = selectors.order_with_lines(order_id)
    if order is None:
        return render(request, "orders/not_found.html", status=404)
    if not selectors.customer_owns_order(request, order):
        return HttpResponseForbidden("This order was placed from another browser: only its customer can see or pay it.")
    return order


def _remember_order(request: HttpRequest, order: Order) -> None:
    # Customers have no account: the session that placed an order owns it.
    ids = request.session.get(selectors.SESSION_ORDERS_KEY, [])
    request.session[selectors.SESSION_ORDERS_KEY] = [*ids, str(order.pk)][-50:]
