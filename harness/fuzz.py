"""What the fuzz tests send to the site's HTTP inputs (Hypothesis strategies), how they send it
through Django's test client, and the check every answer must pass: never a server error.

A value is anything a client can type or forge: empty, blank, huge, non-ASCII, the Unicode
digits `str.isdigit()` accepts and `int()` may refuse ("²") or read as a number ("٣"), NUL,
numbers beyond any column, JSON where text is expected. A request shape is a method, a body
encoding (form, multipart, JSON, plain text, bytes that are none of them, a multipart without
its boundary) and a CSRF token (valid, in the header, missing, wrong). The tests pair them with
who sends them (Visitors) and check what changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.utils.html import escape
from hypothesis import settings
from hypothesis import strategies as st

from harness.factories import CourierFactory, StaffFactory, UserFactory

# The examples of the "ci" profile (tests/conftest.py); each test sets its own count for it.
CI_EXAMPLES = 60


def examples(count: int) -> int:
    """A test's number of examples: `count` under the "ci" profile (`make test`), as many times
    more as the profile loaded asks for (HYPOTHESIS_PROFILE=deep: 2000, some 33 times more)."""
    return max(count, count * settings.default.max_examples // CI_EXAMPLES)


# Digits to str.isdigit() (and so to a check written with it). int() refuses the first group
# (superscripts, circled, ...: "digits" but not decimal) and reads the second as numbers of
# their scripts ("٣" is 3): both kinds have been 500s here.
NOT_DECIMAL_DIGITS = ("²", "³", "¹", "①", "⑩", "⁰", "₃")
OTHER_SCRIPTS_DECIMAL_DIGITS = ("٣", "۴", "७", "௫", "߂", "᠑", "𝟘", "３")
UNICODE_DIGITS = NOT_DECIMAL_DIGITS + OTHER_SCRIPTS_DECIMAL_DIGITS

NUMBER_EDGES = (
    "0",
    "-0",
    "+1",
    " 1 ",
    "1.0",
    "1e3",
    "0x10",
    "1_0",
    "007",
    "NaN",
    "inf",
    "-1",
    str(2**31),
    str(2**63 - 1),
    str(2**63),
    str(-(2**63) - 1),
    "9" * 40,
)
WRONG_TYPES = ("[]", "{}", "null", "true", "[1]", '{"id": 1}', "None", "undefined")

# No lone surrogates: a browser cannot send them (UTF-8 has no encoding for them), and the
# test client would fail to encode them before any view ran.
_characters = st.characters(exclude_categories=("Cs",))


def mostly(usual: st.SearchStrategy, other: st.SearchStrategy, odds: int = 3) -> st.SearchStrategy:
    """`usual` `odds` times out of `odds + 1`: the fuzz spends most examples past the first check
    (a wrong method or CSRF token is refused before the form is read), and still tries the others."""
    return st.one_of([usual] * odds + [other])


def digit_strings(min_size: int = 1, max_size: int = 20) -> st.SearchStrategy[str]:
    """Strings of ASCII and Unicode digits mixed, as a hand-made client could send for a number."""
    digits = st.sampled_from([*"0123456789", *UNICODE_DIGITS])
    return st.lists(digits, min_size=min_size, max_size=max_size).map("".join)


def huge_strings() -> st.SearchStrategy[str]:
    """Far beyond any field's length (a few sizes: each costs the request its time)."""
    return st.builds(
        lambda char, size: char * size,
        st.sampled_from(["a", "9", "²", "é", "<"]),
        st.sampled_from([301, 5_000, 200_000]),
    )


def with_nul() -> st.SearchStrategy[str]:
    """NUL somewhere: nothing on SQLite, an error from PostgreSQL's text columns."""
    return st.tuples(st.text(_characters, max_size=8), st.text(_characters, max_size=8)).map(
        lambda parts: f"{parts[0]}\x00{parts[1]}"
    )


def values(*likely: str) -> st.SearchStrategy[str]:
    """One form or query value: the kinds above, any short text, and values the caller knows
    are meaningful there (`likely`: a real id, a known step) so that the valid paths are
    reached too."""
    kinds = [
        st.just(""),
        st.sampled_from([" ", "\t", "\r\n", "   "]),
        st.text(_characters, max_size=30),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.sampled_from(NUMBER_EDGES),
        st.sampled_from(WRONG_TYPES),
        st.sampled_from(UNICODE_DIGITS),
        digit_strings(),
        with_nul(),
        huge_strings(),
    ]
    if likely:
        return mostly(st.sampled_from(likely), st.one_of(kinds), odds=2)
    return st.one_of(kinds)


def numbers(*likely: str) -> st.SearchStrategy[str]:
    """A value where the page expects a number (a quantity, an id, a page): numbers of every
    size and sign, the edges of the database's integers, Unicode digits, or any other value."""
    kinds = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.sampled_from(NUMBER_EDGES),
        st.sampled_from(UNICODE_DIGITS),
        digit_strings(),
        values(),
    )
    return mostly(st.sampled_from(likely), kinds, odds=2) if likely else kinds


def repeated(value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str] | None]:
    """A field absent (None), sent once, or sent several times (`a=1&a=2`: Django keeps the last)."""
    once = value.map(lambda v: [v])
    return st.one_of(st.none(), once, once, st.lists(value, min_size=2, max_size=3))


def form(fields: Mapping[str, st.SearchStrategy[str]], extra_keys: bool = True) -> st.SearchStrategy[dict]:
    """A form's fields, each absent, once or repeated, plus keys the form does not know."""
    named = st.fixed_dictionaries({name: repeated(value) for name, value in fields.items()})
    extra = (
        st.dictionaries(st.text(_characters, min_size=1, max_size=12), repeated(values()), max_size=2)
        if extra_keys
        else st.just({})
    )
    return st.tuples(named, extra).map(
        lambda both: {key: vals for key, vals in {**both[1], **both[0]}.items() if vals is not None}
    )


def mutated(
    valid: Mapping[str, str], fields: Mapping[str, st.SearchStrategy[str]] | None = None, most: int = 3
) -> st.SearchStrategy[dict[str, list[str]]]:
    """A valid form with up to `most` faults: a field's value replaced (from `fields`' strategy
    for it, else values()), a field left out, a field sent twice, a key the form does not know.
    Shrinks to the fewest faults, so that a failure names the one field that caused it; with
    no fault the form must be taken, so the success path is tested as often as the refusals."""
    fields = dict(fields or {})
    names = sorted({*valid, *fields})

    def value_for(name: str) -> st.SearchStrategy[str]:
        return fields.get(name, values(valid[name]) if name in valid else values())

    # Tuples of plain values, so that a failing example prints as the faults it holds.
    fault = st.one_of(
        st.sampled_from(names).flatmap(lambda name: st.tuples(st.just("replace"), st.just(name), value_for(name))),
        st.sampled_from(names).flatmap(lambda name: st.tuples(st.just("drop"), st.just(name), st.just(""))),
        st.sampled_from(names).flatmap(lambda name: st.tuples(st.just("repeat"), st.just(name), value_for(name))),
        st.tuples(st.just("add"), st.text(_characters, min_size=1, max_size=12), values()),
    )

    def apply(faults: list[tuple[str, str, str]]) -> dict[str, list[str]]:
        data = {name: [value] for name, value in valid.items()}
        for kind, name, value in faults:
            if kind in ("replace", "add"):
                data[name] = [value]
            elif kind == "drop":
                data.pop(name, None)
            else:
                data[name] = [*data.get(name, []), value]
        return data

    return st.lists(fault, max_size=most).map(apply)


ENCODINGS = ("urlencoded", "multipart", "json", "text", "garbage", "broken-multipart")
CSRF = ("valid", "valid-header", "missing", "wrong")
VALID_CSRF = ("valid", "valid-header")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")  # CSRF checks none of them


@dataclass(frozen=True)
class Shape:
    """How a request is sent, beside what it carries."""

    method: str
    encoding: str  # one of ENCODINGS
    csrf: str  # one of CSRF: used only by a client built with enforce_csrf_checks=True

    def __str__(self) -> str:
        return f"{self.method} {self.encoding} csrf={self.csrf}"


def shapes(methods: Sequence[str] = ("POST",)) -> st.SearchStrategy[Shape]:
    """Request shapes, mostly what the page expects (one of `methods`, a form body, a valid
    token), else any method, body encoding and CSRF token."""
    return st.builds(
        Shape,
        method=mostly(st.sampled_from(methods), st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])),
        encoding=mostly(st.sampled_from(ENCODINGS[:2]), st.sampled_from(ENCODINGS), odds=2),
        csrf=mostly(st.sampled_from(VALID_CSRF), st.sampled_from(CSRF)),
    )


def query(fields: Mapping[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A query string's pairs: the page's parameters (each absent, once or repeated), plus strangers."""
    return form(fields).map(lambda data: [(key, value) for key, vals in data.items() for value in vals])


def csrf_refuses(shape: Shape, enforced: bool) -> bool:
    """Whether Django's CSRF check refuses this request (403) before any view: an unsafe method
    without the token; the form field counts only in a POST's form body (Django parses no other)."""
    if not enforced or shape.method in SAFE_METHODS:
        return False
    if shape.csrf == "valid-header":
        return False
    return not (shape.csrf == "valid" and shape.method == "POST" and shape.encoding in ("urlencoded", "multipart"))


class ServerError(AssertionError):
    """What would have been a 500: the view raised (the test client re-raises it) or answered 5xx."""


def csrf_token(client: Client) -> str:
    """The CSRF secret of this client's cookie, fetched from a page that renders a form."""
    if "csrftoken" not in client.cookies:
        client.get("/accounts/login/")
    return client.cookies["csrftoken"].value


def _body(shape: Shape, data: Mapping[str, list[str]], token: str | None) -> tuple[bytes, str]:
    """The request body and its content type, for the shape's encoding."""
    pairs = [(key, value) for key, vals in data.items() for value in vals]
    if token is not None and shape.encoding in ("urlencoded", "multipart"):
        pairs.append(("csrfmiddlewaretoken", token))
    if shape.encoding == "urlencoded":
        return urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    if shape.encoding == "multipart":
        grouped: dict[str, list[str]] = {}
        for key, value in pairs:
            grouped.setdefault(key, []).append(value)
        return encode_multipart(BOUNDARY, grouped), MULTIPART_CONTENT
    if shape.encoding == "json":
        return json.dumps(dict(pairs)).encode(), "application/json"
    if shape.encoding == "text":
        return "\n".join(f"{key}={value}" for key, value in pairs).encode(), "text/plain"
    if shape.encoding == "broken-multipart":  # a boundary the body never uses, then no end
        return b"--other\r\nContent-Disposition: form-data; name=\x00\r\n\r\n" + urlencode(pairs).encode()[:200], (
            "multipart/form-data; boundary=BoUnDaRy"
        )
    # Bytes that claim to be a form and are not (invalid UTF-8, stray separators, a NUL).
    return b"\xff\xfe%zz&=&&\x00" + urlencode(pairs).encode()[:200] + b"\x80", "application/x-www-form-urlencoded"


def send(
    client: Client,
    shape: Shape,
    path: str,
    data: Mapping[str, list[str]] | None = None,
    params: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    **extra: str,
) -> HttpResponse:
    """Send one request of this shape; fail with ServerError where the site would answer 500."""
    token = None
    headers = dict(headers or {})
    if client.handler.enforce_csrf_checks and shape.method not in SAFE_METHODS:
        if shape.csrf == "valid":
            token = csrf_token(client)
        elif shape.csrf == "valid-header":
            headers["X-CSRFToken"] = csrf_token(client)
        elif shape.csrf == "wrong":
            token = "x" * 32
    body, content_type = _body(shape, data or {}, token)
    if params:
        path = f"{path}?{urlencode(list(params))}"
    sent = f"{shape} {path[:200]!r} {dict(list((data or {}).items())[:6])!r}"[:1000]
    try:
        response = client.generic(shape.method, path, body, content_type, headers=headers, **extra)
    except Exception as exc:
        raise ServerError(f"{sent} raised {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500:
        raise ServerError(f"{sent} answered {response.status_code}: {response.content[:300]!r}")
    return response


def text_of(response: HttpResponse) -> str:
    return response.content.decode(errors="replace")


def refused_with_a_reason(response: HttpResponse) -> None:
    """A 4xx that says why (a page or a line of text, not an empty body); a 405 says what it allows."""
    assert 400 <= response.status_code < 500, response.status_code
    if response.status_code == 405:
        assert response.has_header("Allow"), "a 405 names the methods allowed"
        return
    if response.wsgi_request.method != "HEAD":  # whose answer has no body, by definition
        assert text_of(response).strip(), f"a {response.status_code} without a reason"


def sent_to_log_in(response: HttpResponse) -> None:
    """A login page's redirect; or, for an address too long to come back to after logging in
    (Django will not redirect past 2048 characters: DisallowedRedirect), a 400 that says why."""
    if response.status_code == 400:
        refused_with_a_reason(response)
        return
    assert response.status_code == 302, response.status_code
    assert response["Location"].startswith("/accounts/login/"), response["Location"]


def form_errors_shown(response: HttpResponse, form_name: str = "form") -> dict[str, list[str]]:
    """The bound form's errors, each of which the page shows: a field's beside the field (its
    error list's id names it), the others as the form's own. Returns them."""
    form = response.context[form_name]
    errors = form.errors.get_json_data()
    assert errors, "refused, yet the form has no error to show"
    page = text_of(response)
    for field, messages in errors.items():
        if field != "__all__":
            assert f'id="{form[field].auto_id}_error"' in page, f"{field}'s error is not shown beside it"
        for message in messages:
            assert escape(message["message"]) in page, f"{field}: {message['message']!r} is not on the page"
    return {field: [m["message"] for m in messages] for field, messages in errors.items()}


# Who sends a request. Customers have no account: a "customer" is a browser holding the
# orders cookie of its own orders; "anonymous" holds none; "user" is logged in, with no role.
WHO = ("anonymous", "customer", "courier", "staff")
ACCOUNTS = ("anonymous", "user", "courier", "staff")


class Visitors:
    """A test client per kind of user (WHO, ACCOUNTS) and CSRF mode, built at first use and kept for
    the test: couriers and staff logged in once (force_login: no password hashing per
    example), a customer's client primed by `customer` (e.g. placing an order with it)."""

    def __init__(self, customer: Callable[[Client], None] | None = None) -> None:
        self._customer = customer
        self._clients: dict[tuple[str, bool], Client] = {}

    def __call__(self, who: str, enforce_csrf: bool = False) -> Client:
        key = (who, enforce_csrf)
        if key not in self._clients:
            client = Client(enforce_csrf_checks=enforce_csrf)
            if who in _ACCOUNTS:
                client.force_login(_account(who))
            elif who == "customer" and self._customer is not None:
                self._customer(client)
            self._clients[key] = client
        return self._clients[key]


_ACCOUNTS = {
    "courier": (CourierFactory, "courier"),
    "other-courier": (CourierFactory, "bruno"),
    "staff": (StaffFactory, "staff"),
    "user": (UserFactory, "someone"),
}


def _account(who: str) -> User:
    """The account of this kind, made once: a factory hashes its password at every call."""
    factory, username = _ACCOUNTS[who]
    return User.objects.filter(username=username).first() or factory(username=username)
