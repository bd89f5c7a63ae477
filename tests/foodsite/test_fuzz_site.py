"""The project's own pages, fuzzed (harness/fuzz.py): /healthz, /home/, logging in and out.
Login throttling is on as in production (foodsite/auth.py): the test keeps its own count of
failures per username, and every answer must agree with it."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from urllib.parse import urlsplit

import hypothesis
import pytest
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st

from harness import fuzz
from harness.factories import PASSWORD, CourierFactory, StaffFactory

pytestmark = [pytest.mark.django_db, pytest.mark.db_write]

HOMES = {"anonymous": None, "user": "/", "courier": "/courier/", "staff": "/stats/"}


def test_healthz_and_home_answer_any_query_and_refuse_other_methods():
    visitors = fuzz.Visitors()

    @hypothesis.settings(max_examples=fuzz.examples(40))
    @given(
        who=st.sampled_from(fuzz.ACCOUNTS),
        path=st.sampled_from(["/healthz", "/home/"]),
        method=fuzz.mostly(st.just("GET"), st.sampled_from(["HEAD", "POST", "PUT", "DELETE", "OPTIONS"])),
        params=fuzz.query({"next": fuzz.values("/stats/", "https://evil.example/")}),
    )
    # Found by this test: both answered any method (a POST to /healthz: "ok").
    @example(who="anonymous", path="/healthz", method="POST", params=[])
    def attempt(who: str, path: str, method: str, params: list) -> None:
        response = fuzz.send(visitors(who), fuzz.Shape(method, "urlencoded", "missing"), path, params=params)

        if method not in ("GET", "HEAD"):
            fuzz.refused_with_a_reason(response)
        elif path == "/healthz":
            assert response.status_code == 200
            assert method == "HEAD" or response.content == b"ok"
        elif who == "anonymous":
            fuzz.sent_to_log_in(response)
        else:
            assert response.status_code == 302
            assert response["Location"] == HOMES[who]

    attempt()


def cleaned_username(raw: str) -> str | None:
    """The username Django's login form authenticates: stripped, NFKC-normalized, no NUL
    (None: refused on the form, nothing authenticated). Of any length: the form checks none."""
    username = unicodedata.normalize("NFKC", raw.strip())
    return username if username and "\x00" not in username else None


def on_this_site(url: str) -> bool:
    """Whether a browser following this redirect stays on the site: it drops tabs and newlines
    anywhere, control characters and spaces in front, and reads a backslash as a slash."""
    url = re.sub(r"[\t\n\r]", "", url).lstrip("".join(map(chr, range(33)))).replace("\\", "/")
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//")


def test_logging_in_takes_the_right_password_and_locks_after_repeated_failures(settings):
    settings.AXES_FAILURE_LIMIT = limit = 5
    CourierFactory()
    StaffFactory()
    passwords = {"courier": PASSWORD, "staff": PASSWORD}
    failures: Counter[str] = Counter()  # per username (its first 150 characters), all from one address

    @hypothesis.settings(max_examples=fuzz.examples(60))
    @given(
        data=fuzz.form(
            {
                "username": fuzz.values("courier", "staff", "Courier", "ｃｏｕｒｉｅｒ", "courier "),
                "password": fuzz.values(PASSWORD, "wrong-password", ""),
                "next": fuzz.values("/stats/", "/courier/", "https://evil.example/", "//evil.example", "/\\evil"),
            }
        ),
        shape=fuzz.shapes(("POST",)),
        enforce_csrf=st.booleans(),
        agent=fuzz.mostly(st.just("Mozilla/5.0"), fuzz.values()),
        accept=fuzz.mostly(st.just("text/html"), fuzz.values()),
    )
    # Found by this test on PostgreSQL (--db postgres): a NUL in the User-Agent header made a failed
    # login a 500 (axes keeps it with the attempt; DataError: PostgreSQL text fields cannot contain NUL).
    @example(
        data={"username": ["courier"], "password": ["wrong-password"]},
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        enforce_csrf=False,
        agent="\x00",
        accept="text/html",
    )
    # The same in the Accept header, which axes keeps too.
    @example(
        data={"username": ["courier"], "password": ["wrong-password"]},
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        enforce_csrf=False,
        agent="Mozilla/5.0",
        accept="text/\x00html",
    )
    # Found by this test on PostgreSQL: a username of 301 characters was a 500 (DataError: value
    # too long for varchar(255), axes' column): Django's login form checks no length.
    @example(
        data={"username": ["a" * 301], "password": [PASSWORD]},
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        enforce_csrf=False,
        agent="Mozilla/5.0",
        accept="text/html",
    )
    def attempt(data: dict, shape: fuzz.Shape, enforce_csrf: bool, agent: str, accept: str) -> None:
        client = Client(enforce_csrf_checks=enforce_csrf)
        headers = {"User-Agent": agent, "Accept": accept}

        response = fuzz.send(client, shape, "/accounts/login/", data, headers=headers)

        user = client.session.get("_auth_user_id")
        post = response.wsgi_request.POST
        reaches_login = shape.method == "POST" and not fuzz.csrf_refuses(shape, enforce_csrf)
        typed = cleaned_username(post.get("username", "")) if reaches_login else None
        username = typed[:150] if typed is not None else None  # what the lock counts by
        password = post.get("password", "")
        if username is None or not password or "\x00" in password:  # refused on the form: nothing counted
            assert user is None
            if reaches_login:
                assert response.status_code == 200
                fuzz.form_errors_shown(response)
            elif shape.method == "GET":
                assert response.status_code == 200
            elif fuzz.csrf_refuses(shape, enforce_csrf):
                assert response.status_code == 403
            elif response.status_code >= 400:
                fuzz.refused_with_a_reason(response)
            return
        if failures[username] < limit and password == passwords.get(typed):
            failures[username] = 0
            assert user is not None
            if response.status_code == 400:  # a next too long to redirect to (Django: DisallowedRedirect)
                assert len(post.get("next", "")) > 2000
                return
            assert response.status_code == 302
            assert on_this_site(response["Location"]), response["Location"]
            return
        failures[username] += 1
        assert user is None
        if failures[username] >= limit:
            assert response.status_code == 429
            assert "Too many failed logins for this username from your address" in fuzz.text_of(response)
        else:
            assert response.status_code == 200
            assert "Please enter a correct username and password" in fuzz.text_of(response)

    attempt()


def test_logging_out_ends_the_session_for_a_post_with_its_token_only():
    @hypothesis.settings(max_examples=fuzz.examples(40))
    @given(
        who=st.sampled_from(["anonymous", "courier", "staff"]),
        shape=fuzz.shapes(("POST",)),
        enforce_csrf=st.booleans(),
        data=fuzz.form({"next": fuzz.values("/", "https://evil.example/")}),
    )
    def attempt(who: str, shape: fuzz.Shape, enforce_csrf: bool, data: dict) -> None:
        client = fuzz.Visitors()(who, enforce_csrf)  # a fresh session each time: logging out ends it

        response = fuzz.send(client, shape, "/accounts/logout/", data)

        still_in = client.session.get("_auth_user_id") is not None
        if fuzz.csrf_refuses(shape, enforce_csrf):
            assert response.status_code == 403
            assert still_in == (who != "anonymous")
        elif shape.method == "POST":
            assert response.status_code == 302
            assert on_this_site(response["Location"])
            assert not still_in
        else:
            if shape.method != "OPTIONS":
                fuzz.refused_with_a_reason(response)
            assert still_in == (who != "anonymous")

    attempt()
