"""Login throttling (foodsite/auth.py, django-axes): repeated failures lock a username at one
address, with the reason on the login page; the right password is refused meanwhile; other
addresses are not locked; the lock ends after the cool-off, at a successful login's reset,
or when staff lift it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client, RequestFactory

from foodsite.auth import client_address
from harness.factories import PASSWORD, CourierFactory, StaffFactory
from harness.web import logged_in

pytestmark = [pytest.mark.django_db, pytest.mark.db_write]

LIMIT = 3
BASE_DIR = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(autouse=True)
def limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def log_in(client: Client, password: str, username: str = "courier", **extra: str):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def logged_in_as(client: Client) -> str | None:
    """Who the client's session belongs to: the courier page answers couriers only."""
    response = client.get("/home/")
    return None if response["Location"].startswith("/accounts/login/") else response["Location"]


def lock(client: Client, username: str = "courier", **extra: str):
    for attempt in range(1, LIMIT + 1):
        response = log_in(client, "wrong-password", username, **extra)
        assert response.status_code == (429 if attempt == LIMIT else 200), attempt
    return response


def test_repeated_failures_lock_the_username_at_that_address_with_the_reason_on_the_login_page():
    CourierFactory()
    client = Client()

    for _ in range(LIMIT - 1):
        refused = log_in(client, "wrong-password")
        assert refused.status_code == 200
        assert "Please enter a correct username and password" in refused.content.decode()
        assert 'id="login-locked-out"' not in refused.content.decode()

    locked = log_in(client, "wrong-password")

    page = locked.content.decode()
    assert locked.status_code == 429
    assert "Too many failed logins for this username from your address" in page
    assert "locked here for 15 minutes after the last attempt, even with the right password" in page
    assert 'name="username"' in page  # the login page itself, not a bare error
    assert 'value="courier"' in page


def test_the_right_password_is_refused_while_locked_and_another_address_is_not_locked():
    CourierFactory()
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    lock(attacker)

    refused = log_in(attacker, PASSWORD)
    assert refused.status_code == 429
    assert logged_in_as(attacker) is None

    courier = Client(REMOTE_ADDR="198.51.100.4")
    assert log_in(courier, PASSWORD).status_code == 302
    assert logged_in_as(courier) == "/courier/"


def test_another_username_at_the_same_address_is_not_locked():
    CourierFactory()
    StaffFactory()
    client = Client()
    lock(client, "courier")
    assert log_in(client, PASSWORD, "staff").status_code == 302


def test_the_lock_ends_after_the_cool_off(settings):
    CourierFactory()
    client = Client()
    lock(client)
    assert log_in(client, PASSWORD).status_code == 429

    # A cool-off this short, and the failures are older than it: the lock has passed.
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    time.sleep(1.1)

    assert log_in(client, PASSWORD).status_code == 302
    assert logged_in_as(client) == "/courier/"


def test_a_successful_login_resets_the_count():
    CourierFactory()
    client = Client()
    for _ in range(LIMIT - 1):
        log_in(client, "wrong-password")
    assert log_in(client, PASSWORD).status_code == 302
    client.post("/accounts/logout/")

    for _ in range(LIMIT - 1):
        assert log_in(client, "wrong-password").status_code == 200
    assert log_in(client, PASSWORD).status_code == 302


def test_staff_can_unlock_a_username_from_the_admin_or_the_command():
    CourierFactory()
    client = Client()
    lock(client)

    admin_page = logged_in(StaffFactory()).get("/admin/axes/accessattempt/")
    assert admin_page.status_code == 200
    assert "courier" in admin_page.content.decode()

    call_command("axes_reset_username", "courier")

    assert AccessAttempt.objects.count() == 0
    assert log_in(client, PASSWORD).status_code == 302


def test_behind_proxies_the_address_is_the_one_the_outermost_proxy_saw(settings):
    settings.TRUSTED_PROXIES = 1
    CourierFactory()
    # Every request comes from the proxy (127.0.0.1); X-Forwarded-For's last entry is the
    # client's, whatever the client wrote to its left.
    attacker = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4, 203.0.113.9")
    lock(attacker)
    assert log_in(attacker, PASSWORD).status_code == 429

    courier = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4")
    assert log_in(courier, PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("proxies", "meta", "address"),
    [
        (0, {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.4"}, "203.0.113.9"),
        (1, {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.4, 203.0.113.9"}, "203.0.113.9"),
        (2, {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9, 10.0.0.2"}, "203.0.113.9"),
        (1, {"REMOTE_ADDR": "127.0.0.1"}, None),  # a proxy that adds no header: no address to trust
        (1, {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "not-an-address"}, None),
        (0, {"REMOTE_ADDR": "fe80::1%eth0"}, "fe80::1"),
    ],
    ids=["direct", "one-proxy", "two-proxies", "no-header", "malformed", "ipv6-zone"],
)
def test_client_address(settings, proxies, meta, address):
    settings.TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/accounts/login/", **meta)
    assert client_address(request) == address


@pytest.mark.parametrize(
    "variables",
    [{"LOGIN_FAILURE_LIMIT": "0"}, {"LOGIN_LOCKOUT_MINUTES": "0"}, {"DJANGO_TRUSTED_PROXIES": "-1"}],
    ids=["no-failure-allowed", "no-cool-off", "negative-proxies"],
)
def test_settings_that_would_lock_everyone_or_trust_nothing_refuse_to_start(tmp_path, variables):
    env = {**os.environ, "FOODSITE_HOME": str(tmp_path), **variables}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "LOGIN_FAILURE_LIMIT must be at least 1" in result.stderr
