"""web_bench.py's search for the highest rate that holds the latency bound, as pure logic: a
server that holds every rate up to some capacity, and what the search measures to find it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

BASE_DIR = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("web_bench", BASE_DIR / "bench" / "web_bench.py")
web_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(web_bench)


def server_holding_up_to(capacity: int):
    return lambda rate: (rate <= capacity, {"p99": 1.0 if rate <= capacity else 500.0})


def test_it_steps_up_then_bisects_to_the_resolution():
    found, steps = web_bench.find_capacity(server_holding_up_to(230), start=100, step=50, resolution=25, maximum=1000)

    assert found == 225
    assert [(s["target"], s["held"]) for s in steps] == [
        (100, True), (150, True), (200, True), (250, False), (225, True),
    ]  # fmt: skip


def test_a_first_step_that_does_not_hold_is_searched_below():
    found, steps = web_bench.find_capacity(server_holding_up_to(60), start=100, step=50, resolution=25, maximum=1000)

    assert found == 50
    assert [s["target"] for s in steps] == [100, 50, 75]


def test_none_held_is_zero():
    found, _ = web_bench.find_capacity(server_holding_up_to(0), start=100, step=50, resolution=25, maximum=1000)
    assert found == 0


@given(
    capacity=st.integers(0, 1200),
    start=st.integers(10, 300),
    step=st.integers(10, 200),
    resolution=st.integers(5, 50),
)
def test_the_rate_found_held_and_one_resolution_more_did_not(capacity, start, step, resolution):
    maximum = 1000
    found, steps = web_bench.find_capacity(server_holding_up_to(capacity), start, step, resolution, maximum)

    held = {s["target"] for s in steps if s["held"]}
    refused = {s["target"] for s in steps if not s["held"]}
    assert found == max(held, default=0)
    assert found <= capacity
    if refused:  # the search stopped within the resolution of a rate that did not hold
        assert min(r for r in refused if r > found) - found <= resolution
    else:
        assert found + step > maximum  # it ran out of rates to try


@pytest.mark.parametrize(
    ("step", "why"),
    [
        ({"errors": 2, "rate": 200.0, "p99": 10.0}, "2 errors"),
        ({"errors": 0, "rate": 180.0, "p99": 10.0}, "the client sent 180/s"),
        ({"errors": 0, "rate": 200.0, "p99": 50.0}, "p99 50.0 ms"),
        ({"errors": 0, "rate": 199.0, "p99": 49.9}, ""),
    ],
)
def test_a_step_holds_with_no_error_at_the_rate_asked_under_the_bound(step, why):
    assert web_bench.step_held(step, 200, 50.0) == (why == "", why)
