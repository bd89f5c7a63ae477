"""WhiteNoise for daphne: the same static-file serving, callable from Django's async handler.

WhiteNoise's middleware is sync-only. Under ASGI, Django then switches every request from
the event loop to a thread for it and back to the loop for the async-capable middleware
below it, before switching to a thread again for the view: two extra thread hops per page,
which profiling (py-spy under wrk) showed as the largest cost of a cheap request. Finding a
static file is a dictionary look-up, so it is done right on the loop here.
"""

from __future__ import annotations

from collections.abc import Awaitable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    """Sync under WSGI (and Django's test client), async under ASGI: no adapter either way."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self._serve_or_pass_on(request)
        return super().__call__(request)

    async def _serve_or_pass_on(self, request: HttpRequest) -> HttpResponseBase:
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
