"""A request whose database does not answer (PostgreSQL restarting, the network to it down) is
answered 503 with a reason and a Retry-After, not a 500: the customer is told the order was not
taken and to try again, and the operator gets one WARNING line instead of a stack trace."""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

log = logging.getLogger("foodsite.web")

RETRY_AFTER_S = 30
MESSAGE = (
    "Foodsite cannot take requests right now: its database does not answer. Nothing was ordered "
    "or paid; please try again in a minute."
)


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("database unavailable: %s %s answered 503 (%s)", request.method, request.path, exception)
        # 503: SessionMiddleware saves no session on a 5xx, so the answer needs no database either.
        response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
