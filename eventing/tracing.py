"""One order followed across services: the W3C trace context, carried by hand.

A web request gets a trace (from its `traceparent` header when a proxy or a client sent one,
else a new one). Every event it causes carries it: stored with the outbox row, sent as the
Kafka header `traceparent` by the producer and the relay, read per event by the consumer
runner, passed on the live notices and in the Celery tasks' headers. Every log line written
while a trace is current ends with `trace=<trace id>`, so `grep <trace id>` over the logs of
every process shows one order's whole path.

    traceparent = version "-" trace-id "-" parent-id "-" flags   (W3C Trace Context)
                  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01

Why not OpenTelemetry: we need the id in the logs, not spans shipped to a collector; the
format is the same, so a deployment that adds OpenTelemetry later keeps these headers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from eventing.headers import Header

HEADER = Header.TRACEPARENT  # the HTTP header, the Kafka header and the Celery task header

_FORMAT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class Trace:
    trace_id: str  # 32 hex digits, the same from the browser's request to the email
    parent_id: str  # 16 hex digits, the step that caused this one
    flags: str = "01"  # sampled

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    def child(self) -> Trace:
        """The same trace, one step further (e.g. an event the request produced)."""
        return Trace(self.trace_id, secrets.token_hex(8), self.flags)


def new_trace() -> Trace:
    return Trace(secrets.token_hex(16), secrets.token_hex(8))


def parse(value: str | bytes | None) -> Trace | None:
    """A trace from a `traceparent` value; None when absent or malformed (never raises: a
    bad header from outside must not fail a request or an event)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    match = _FORMAT.match(value.strip().lower()) if value else None
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return Trace(trace_id, parent_id, flags)


_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("trace", default=None)


def current() -> Trace | None:
    return _current.get()


def current_traceparent() -> str:
    """The current trace's header value, one step further; "" when there is none."""
    trace = _current.get()
    return trace.child().traceparent if trace is not None else ""


@contextlib.contextmanager
def use(trace: Trace | str | bytes | None) -> Iterator[Trace | None]:
    """Make `trace` (or a parsed `traceparent`) current for the block; None leaves none."""
    if not isinstance(trace, Trace):
        trace = parse(trace)
    token = _current.set(trace)
    try:
        yield trace
    finally:
        _current.reset(token)


def trace_id_of(traceparent: str | bytes | None) -> str:
    trace = parse(traceparent)
    return trace.trace_id if trace is not None else ""


def header_of(headers: list[tuple[str, bytes]] | None) -> str:
    """The `traceparent` of a Kafka message's headers, "" if none."""
    for key, value in headers or ():
        if key == HEADER and value:
            return value.decode("ascii", errors="replace")
    return ""


# -- the web request ----------------------------------------------------------------------


class TraceMiddleware:
    """Makes the request's trace current: its `traceparent` header if valid, else a new one.
    The response says which (`traceparent`), so a client can grep the logs for its request.
    Async and sync capable: no thread switch on daphne's event loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._async:
            return self._acall(request)
        with use(self._trace(request)) as trace:
            response = self.get_response(request)
        response[HEADER] = trace.traceparent
        return response

    async def _acall(self, request):
        with use(self._trace(request)) as trace:
            response = await self.get_response(request)
        response[HEADER] = trace.traceparent
        return response

    @staticmethod
    def _trace(request) -> Trace:
        incoming = parse(request.META.get("HTTP_TRACEPARENT"))
        return incoming.child() if incoming is not None else new_trace()


# -- logging ------------------------------------------------------------------------------


class TraceLogFilter(logging.Filter):
    """Adds `trace_id` (the current trace's, or one given with `extra={"trace_id": ...}`) and
    `trace` (" trace=<id>" or "", for the plain format) to every record, and the process name."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = getattr(record, "trace_id", None)
        if trace_id is None:
            trace = _current.get()
            trace_id = trace.trace_id if trace is not None else ""
            record.trace_id = trace_id
        record.trace = f" trace={trace_id}" if trace_id else ""
        record.process_name = PROCESS_NAME
        return True


def _process_name() -> str:
    # The launcher names each process as the Procfile does (web, stats, worker...).
    name = os.environ.get("FOODSITE_PROCESS")
    if name:
        return name
    argv = [os.path.basename(arg) for arg in sys.argv[:2]]
    return argv[1] if argv and argv[0] == "manage.py" and len(argv) > 1 else (argv[0] if argv else "python")


PROCESS_NAME = _process_name()


class JsonLogFormatter(logging.Formatter):
    """LOG_FORMAT=json: one JSON object per line for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", "") or None,
            "process": getattr(record, "process_name", PROCESS_NAME),
            "pid": record.process,
        }
        trace_ids = getattr(record, "trace_ids", None)
        if trace_ids and not entry["trace_id"]:  # a consumer's line about several orders' events
            entry["trace_ids"] = trace_ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# -- Celery tasks --------------------------------------------------------------------------

_task_tokens: dict[str, contextvars.Token] = {}


def propagate_through_celery() -> None:
    """A task queued while a trace is current carries it in its headers; the worker makes it
    current while the task runs, so the task's log lines carry the trace id."""
    from celery import signals

    signals.before_task_publish.connect(_add_task_header, weak=False)
    signals.task_prerun.connect(_enter_task, weak=False)
    signals.task_postrun.connect(_leave_task, weak=False)


def _add_task_header(headers: dict | None = None, **_: object) -> None:
    traceparent = current_traceparent()
    if traceparent and headers is not None:
        headers[HEADER] = traceparent


def _enter_task(task_id: str, task, **_: object) -> None:
    traceparent = getattr(task.request, HEADER, None) or (task.request.headers or {}).get(HEADER)
    _task_tokens[task_id] = _current.set(parse(traceparent))


def _leave_task(task_id: str, **_: object) -> None:
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        _current.reset(token)
