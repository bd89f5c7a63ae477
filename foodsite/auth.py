"""Login throttling for the courier and staff accounts, on django-axes.

Failed logins are counted per username and client address (axes' AccessAttempt rows); past
AXES_FAILURE_LIMIT that username is locked at that address until AXES_COOLOFF_TIME after the
last failure, and the login page says so (foodsite.views.login_locked_out, HTTP 429). A lock
at one address leaves the account usable from every other: someone guessing a courier's
password from elsewhere cannot lock the courier out. A successful login clears the count;
staff unlock by hand (admin "Access attempts", or `manage.py axes_reset_username <name>`).
"""

from __future__ import annotations

import ipaddress

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

# What axes keeps of a request with each attempt, from its headers and path: text that
# PostgreSQL refuses to store when it holds a NUL (DataError, a 500 for that login).
_KEPT_FROM_THE_REQUEST = ("axes_user_agent", "axes_http_accept", "axes_path_info")


class LoginThrottle(AxesStandaloneBackend):
    """axes' check, first of the authentication backends: refuses every login of a username
    locked at the request's address (ModelBackend, next, checks the password)."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: object
    ) -> AbstractBaseUser | None:
        # No request, no address to count by: a script's authenticate(), the test client's
        # login(). The login pages always pass theirs.
        if request is None:
            return None
        AxesProxyHandler.update_request(request)  # once per request: the attempt's fields
        for name in _KEPT_FROM_THE_REQUEST:
            setattr(request, name, getattr(request, name).replace("\x00", "\ufffd"))
        return super().authenticate(request, username, password, **kwargs)


def attempted_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The username an attempt counts against (settings.AXES_USERNAME_CALLABLE): as the login
    form cleaned it, cut to the longest a username can be. Django's login form checks no
    length, and axes' column (255 on PostgreSQL) refused a longer one: a 500 for that login."""
    field = get_user_model().USERNAME_FIELD
    username = credentials.get(field) if credentials else request.POST.get(field)
    if username is None:
        return None
    return username[: get_user_model()._meta.get_field(field).max_length].replace("\x00", "\ufffd")


def client_address(request: HttpRequest) -> str | None:
    """The address a login attempt counts against. The connection's own, unless
    settings.TRUSTED_PROXIES proxies stand in front: then the one the outermost proxy saw,
    counted from the right of X-Forwarded-For (each proxy appends its peer; whatever lies
    further left, the client wrote). None if that is not an address: axes then counts such
    attempts of a username together, under no address (none that a header could rotate)."""
    address = request.META.get("REMOTE_ADDR", "")
    if settings.TRUSTED_PROXIES:
        forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        address = forwarded[-settings.TRUSTED_PROXIES] if len(forwarded) >= settings.TRUSTED_PROXIES else ""
    try:
        # Without an IPv6 zone ("%eth0"): PostgreSQL's inet column, where axes keeps it, has none.
        return str(ipaddress.ip_address(address.partition("%")[0]))
    except ValueError:
        return None
