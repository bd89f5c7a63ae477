"""/metrics fuzzed (harness/fuzz.py): its one input is who asks, the Authorization header and
the client's address. It answers the metrics (read from the real broker and the database) to
the exact bearer token or an allowed network, a 403 that says what it needs to anything
else; never a 500, whatever the header holds."""

from __future__ import annotations

import secrets

import hypothesis
import pytest
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st

from harness import fuzz

pytestmark = pytest.mark.django_db(transaction=True)  # scraped in a thread of its own, its own connection

TOKEN = secrets.token_urlsafe(32)


def authorizations() -> st.SearchStrategy[str | None]:
    """No header, the token in every wrong shape, and any value at all."""
    near_misses = [
        f"Bearer {TOKEN}",
        TOKEN,
        f"bearer {TOKEN}",
        f"Bearer  {TOKEN}",
        f"Bearer {TOKEN} ",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}\x00",
        f"Basic {TOKEN}",
        "Bearer ",
        "Bearer",
    ]
    return st.one_of(
        st.none(),
        st.sampled_from(near_misses),
        fuzz.values().map(lambda v: f"Bearer {v}"),
        fuzz.values(),
    )


def test_metrics_answer_the_token_or_an_allowed_address_and_refuse_everything_else(kafka, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16", "::1/128"]

    @hypothesis.settings(max_examples=fuzz.examples(50))
    @given(
        authorization=authorizations(),
        address=fuzz.mostly(
            st.sampled_from(["10.2.0.1", "192.0.2.7"]),
            st.one_of(
                st.sampled_from(["10.1.200.7", "::1", "", "not-an-address", "10.1.0.1%eth0", "::ffff:10.1.0.1"]),
                fuzz.values(),
            ),
        ),
        method=fuzz.mostly(st.just("GET"), st.sampled_from(["HEAD", "POST", "PUT", "DELETE"])),
    )
    # Found by this test: /metrics answered any method (a POST from an allowed address: the metrics).
    @example(authorization=None, address="10.1.200.7", method="POST")
    @example(authorization=f"Bearer {TOKEN}", address="192.0.2.7", method="GET")
    @example(authorization=None, address="10.1.200.7", method="GET")
    def attempt(authorization: str | None, address: str, method: str) -> None:
        headers = {"Authorization": authorization} if authorization is not None else {}
        shape = fuzz.Shape(method, "urlencoded", "missing")

        response = fuzz.send(Client(), shape, "/metrics", headers=headers, REMOTE_ADDR=address)

        allowed = authorization == f"Bearer {TOKEN}" or address in ("10.1.200.7", "::1")
        if method not in ("GET", "HEAD"):
            fuzz.refused_with_a_reason(response)
        elif allowed:
            assert response.status_code == 200
            assert method == "HEAD" or "foodsite_kafka_up 1.0" in fuzz.text_of(response)
        else:
            assert response.status_code == 403
            assert method == "HEAD" or "Metrics need a bearer token or an allowed address" in fuzz.text_of(response)

    attempt()
