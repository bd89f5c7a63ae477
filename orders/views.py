from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from notifications import selectors as notification_selectors
from orders import selectors, services
from orders.forms import OrderForm, PaymentForm, quantity_of
from orders.models import Dish, Order
from recommendations import selectors as recommendation_selectors


@require_http_methods(["GET", "POST"])
def menu(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        # The cart is checked against the process's copy of the dishes in it (the write checks
        # them again against the database); the whole menu is read only if the form comes
        # back with an error.
        dishes = selectors.dishes_to_order(OrderForm.dish_ids_in(request.POST))
        form = OrderForm(request.POST, dishes=list(dishes.values()))
        if form.is_valid():
            try:
                order = services.place_order(
                    customer_name=form.cleaned_data["customer_name"],
                    address=form.cleaned_data["address"],
                    items=form.cleaned_data["items"],
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    email=form.cleaned_data["email"] or None,
                    menu=form.dishes,
                )
            except services.OrderFormReused as exc:
                form.add_error(None, exc)
                form.renew_key()  # its key is the other order's: sent again, it would be refused again
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return _remember_order(request, order, redirect("order-detail", order_id=order.pk))
        return render(request, "orders/menu.html", _menu_context(form, list(selectors.menu())), status=400)
    return render(request, "orders/menu.html", _menu_context(OrderForm(dishes=[]), list(selectors.menu())))


def _menu_context(form: OrderForm, dishes: list[Dish]) -> dict:
    """The form's rows with the recommendations service's hints: per dish what is often
    ordered with it (shown while it is in the cart), and the dishes popular now."""
    by_id = {dish.pk: dish for dish in dishes}
    often = recommendation_selectors.often_ordered_with(by_id, limit=3, among=by_id)
    rows = [
        (
            dish,
            quantity,
            (quantity_of(quantity) or 0) > 0,
            [by_id[p.dish_id] for p in often.get(dish.pk, [])],
        )
        for dish, quantity in form.menu_rows(dishes)
    ]
    popular = [(by_id[p.dish_id], p.units) for p in recommendation_selectors.popular_now(limit=5, among=by_id)]
    return {
        "form": form,
        "rows": rows,
        "popular": popular,
        "popular_window": settings.RECOMMENDATIONS_POPULAR_WINDOW_MIN,
    }


@require_safe  # a page to read: another method (a POST was a 200) is a 405 saying which ones it takes
def order_detail(request: HttpRequest, order_id: str) -> HttpResponse:
    order = _customer_order(request, order_id)
    if not isinstance(order, Order):
        return order
    form = PaymentForm() if order.status == Order.Status.PLACED else None
    notifications = notification_selectors.for_order(order.pk)
    return render(request, "orders/order_detail.html", _order_context(order, form=form, notifications=notifications))


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
            return render(request, "orders/order_detail.html", _order_context(order, error=str(exc)), status=409)
        if payment.succeeded:
            return redirect("order-detail", order_id=order.pk)
        form.add_error(None, payment.failure_reason)
        return render(request, "orders/order_detail.html", _order_context(order, form=form), status=402)
    return render(request, "orders/order_detail.html", _order_context(order, form=form), status=400)


def _order_context(order: Order, **extra: object) -> dict:
    return {"order": order, "progress": selectors.order_progress(order), **extra}


def _customer_order(request: HttpRequest, order_id: str) -> Order | HttpResponse:
    order = selectors.order_with_lines(order_id)
    if order is None:
        return render(request, "orders/not_found.html", status=404)
    if not selectors.customer_owns_order(request, order):
        return HttpResponseForbidden("This order was placed from another browser: only its customer can see or pay it.")
    return order


def _remember_order(request: HttpRequest, order: Order, response: HttpResponse) -> HttpResponse:
    ids = [i for i in selectors.orders_in_cookie(request.COOKIES) if i != str(order.pk)]
    response.set_cookie(
        selectors.ORDERS_COOKIE,
        selectors.orders_cookie_value([*ids, str(order.pk)]),
        max_age=selectors.ORDERS_COOKIE_MAX_AGE,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    return response
