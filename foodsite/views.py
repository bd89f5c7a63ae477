from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_safe

from deliveries.permissions import is_courier


@require_safe
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Where a login lands: each role on its own page."""
    if request.user.is_staff:
        return redirect("stats")
    if is_courier(request.user):
        return redirect("courier")
    return redirect("menu")


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def login_locked_out(
    request: HttpRequest, response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """The login page for a username locked at this address (settings.AXES_LOCKOUT_CALLABLE,
    foodsite.auth): what happened, for how long, and who can lift it. 429 Too Many Requests.
    It says the same whether or not the username exists (every failure counts alike)."""
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes >= 1 else "a moment"
    # Unbound, the username kept: a bound form would authenticate again (another failure) and
    # say "wrong password", when even the right one is refused now.
    form = AuthenticationForm(request, initial={"username": request.POST.get("username", "")[:150]})
    context = {
        "form": form,
        "locked_out": (
            f"Too many failed logins for this username from your address: it is locked here for {wait} "
            "after the last attempt, even with the right password. Other addresses are not affected; "
            "staff can unlock it sooner."
        ),
    }
    return render(request, "registration/login.html", context, status=429)
