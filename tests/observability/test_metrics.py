"""Who may read /metrics, and what it is made of (the moving numbers are checked on the
whole stack in tests/test_observability.py)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from foodsite.asgi import application
from harness.factories import StaffFactory
from harness.web import logged_in
from live.bridge import stop_bridge
from observability.metrics import WEBSOCKETS_OPEN

BASE_DIR = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


def test_metrics_need_an_allowed_address_or_the_token(kafka, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    settings.METRICS_TOKEN = token = secrets.token_urlsafe(32)

    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403  # loopback is not in the list
    assert Client(REMOTE_ADDR="10.2.0.1").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="10.2.0.1").get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert Client(REMOTE_ADDR="10.2.0.1").get("/metrics", HTTP_AUTHORIZATION=token).status_code == 403  # no "Bearer"

    allowed = Client(REMOTE_ADDR="10.1.200.7").get("/metrics")
    assert allowed.status_code == 200
    assert b"foodsite_kafka_up " in allowed.content  # 1 or 0: topics just created may have no leader yet
    authorised = Client(REMOTE_ADDR="10.2.0.1").get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert authorised.status_code == 200
    assert b"foodsite_outbox_unsent" in authorised.content


def test_an_empty_token_opens_nothing(kafka, settings):
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = ""
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_production_settings_close_metrics_until_a_token_or_networks_are_set(tmp_path):
    code = "from django.conf import settings; print(repr((settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS)))"
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "FOODSITE_HOME": str(tmp_path),
    }
    for name in ("METRICS_TOKEN", "METRICS_ALLOWED_NETWORKS"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "('', [])"


def test_open_websockets_are_counted_until_they_close(kafka):
    staff = logged_in(StaffFactory())
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in staff.cookies.items())
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), (b"cookie", cookies.encode())]
    gauge = WEBSOCKETS_OPEN.labels("stats")
    before = gauge._value.get()

    async def open_and_close() -> tuple[float, float]:
        communicator = WebsocketCommunicator(application, "/ws/stats/", headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        while_open = gauge._value.get()
        await communicator.disconnect()
        return while_open, gauge._value.get()

    try:
        assert async_to_sync(open_and_close)() == (before + 1, before)
    finally:
        stop_bridge()


@pytest.mark.parametrize(
    ("variables", "warning"),
    [
        ({"METRICS_TOKEN": "short"}, "foodsite.W001"),
        ({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,not-a-network"}, "foodsite.W002"),
        ({"METRICS_ALLOWED_NETWORKS": "0.0.0.0/0"}, "foodsite.W003"),
        ({"METRICS_TOKEN": secrets.token_urlsafe(32), "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"}, None),
    ],
)
def test_check_deploy_warns_about_metrics_open_too_wide(tmp_path, variables, warning):
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "foodsite.example",
        "FOODSITE_HOME": str(tmp_path),
        **variables,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if warning is None:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert warning in result.stderr + result.stdout


def test_a_request_slower_than_the_setting_is_logged_with_its_view_and_trace(settings, caplog):
    settings.SLOW_REQUEST_MS = 10_000
    Client().get("/healthz")
    assert "slow request" not in caplog.text

    settings.SLOW_REQUEST_MS = 0  # every request is "slow"
    Client().get("/healthz", HTTP_TRACEPARENT="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    [record] = [r for r in caplog.records if "slow request" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "GET /healthz (healthz) 200 in" in record.getMessage()
    assert getattr(record, "trace_id", None) == "0af7651916cd43dd8448eb211c80319c"
