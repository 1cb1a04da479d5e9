# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When and how long the registry client waits before trying again (fake sleep and clock)."""

from __future__ import annotations

import email.utils
import time

import pytest

from ansible_collections.kubesolo.fleet.plugins.module_utils import _retry
from ansible_collections.kubesolo.fleet.plugins.module_utils._retry import RetryPolicy, retry_after_seconds

NOW = 1800000000.0  # a whole second, as HTTP dates are


class FakeTime:
    """A clock that only moves when the policy sleeps (or a test moves it)."""

    def __init__(self):
        self.now = 500.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def policy(**kwargs):
    """(RetryPolicy with a fake sleep, the fake time; the budget counts only what it sleeps)."""
    fake = FakeTime()
    return RetryPolicy(sleep=fake.sleep, **kwargs), fake


# -- Retry-After -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 30 ", 30.0),
    ],
)
def test_retry_after_in_seconds(value, seconds):
    assert retry_after_seconds(value, now=NOW) == seconds


def test_retry_after_as_an_http_date_in_the_future():
    assert retry_after_seconds(email.utils.formatdate(NOW + 90, usegmt=True), now=NOW) == 90.0


def test_retry_after_as_an_http_date_in_the_past_means_now():
    assert retry_after_seconds(email.utils.formatdate(NOW - 90, usegmt=True), now=NOW) == 0.0


def test_retry_after_as_an_http_date_uses_the_current_time_by_default():
    seconds = retry_after_seconds(email.utils.formatdate(time.time() + 3600, usegmt=True))
    assert 3590 <= seconds <= 3600


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "10s", "Wed, 99 Foo 2026 12:00:00 GMT"])
def test_unusable_retry_after_is_none(value):
    assert retry_after_seconds(value, now=NOW) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b3"], ids=["0xB2", "0xB9-0xB3"])
def test_retry_after_of_superscript_digits_is_unusable_not_a_crash(value):
    # http.client decodes header bytes as latin-1, so bytes 0xB2, 0xB3, 0xB9 arrive as
    # superscript digits: str.isdigit() says yes, float() raises ValueError.
    assert retry_after_seconds(value, now=NOW) is None


# -- Backoff ---------------------------------------------------------------------


def backoff_cap(attempt, max_wait):
    """The longest documented wait before try ``attempt + 1``: from half a second, doubling."""
    return min(max_wait, 0.5 * 2 ** (attempt - 1))


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6])
def test_backoff_is_jittered_between_half_and_all_of_its_cap(attempt):
    retry, fake = policy(retries=10, max_wait=60, budget=1e9)
    for _sample in range(200):
        assert retry.wait(attempt, "HTTP 503") is True
    cap = backoff_cap(attempt, 60)
    assert all(cap / 2 <= delay <= cap for delay in fake.sleeps), (cap, min(fake.sleeps), max(fake.sleeps))
    assert len(set(fake.sleeps)) > 100  # jittered, not one fixed delay


def test_backoff_grows_with_each_attempt():
    retry, fake = policy(retries=10, max_wait=60, budget=1e9)
    by_attempt = []
    for attempt in range(1, 7):
        del fake.sleeps[:]
        for _sample in range(50):
            retry.wait(attempt, "HTTP 503")
        by_attempt.append(list(fake.sleeps))
    for shorter, longer in zip(by_attempt, by_attempt[1:]):
        assert min(longer) >= max(shorter)
        assert sum(longer) / len(longer) > sum(shorter) / len(shorter)
    assert max(by_attempt[-1]) > 10 * min(by_attempt[0])


def test_backoff_never_exceeds_max_wait():
    retry, fake = policy(retries=30, max_wait=3, budget=1e9)
    for attempt in range(1, 31):
        retry.wait(attempt, "HTTP 503")
    assert max(fake.sleeps) <= 3
    assert min(fake.sleeps[10:]) >= 1.5  # capped, still jittered from half the cap


# -- Retry-After in the policy ---------------------------------------------------


def test_retry_after_is_waited_exactly():
    retry, fake = policy(max_wait=60)
    assert retry.wait(1, "HTTP 429", retry_after=7.0) is True
    assert fake.sleeps == [7.0]


def test_retry_after_zero_retries_at_once():
    retry, fake = policy()
    assert retry.wait(1, "HTTP 503", retry_after=0.0) is True
    assert fake.sleeps == [0.0]


def test_a_long_retry_after_waits_max_wait_not_a_few_seconds():
    retry, fake = policy(max_wait=60, budget=1e9)
    assert retry.wait(1, "HTTP 429", retry_after=3600.0) is True
    assert fake.sleeps == [60]


def test_retry_after_is_honoured_on_later_attempts_too():
    retry, fake = policy(retries=10, max_wait=60, budget=1e9)
    assert retry.wait(6, "HTTP 503", retry_after=2.0) is True
    assert fake.sleeps == [2.0]  # not the (longer) backoff of attempt 6


# -- Bounds ----------------------------------------------------------------------


def test_retries_bound_the_tries_of_one_request():
    retry, fake = policy(retries=3, budget=1e9)
    assert [retry.wait(attempt, f"error {attempt}") for attempt in (1, 2, 3)] == [True, True, True]
    assert retry.wait(4, "error 4") is False
    assert len(fake.sleeps) == 3
    assert retry.summary() == {"retries": 3, "last_error": "error 4"}


def test_no_retries_means_no_wait():
    retry, fake = policy(retries=0)
    assert retry.wait(1, "refused") is False
    assert fake.sleeps == []
    assert retry.summary() == {"retries": 0, "last_error": "refused"}


def test_each_request_gets_its_retries_and_the_count_adds_up():
    retry, _fake = policy(retries=2, budget=1e9)
    assert retry.wait(1, "a") and retry.wait(2, "b")
    assert retry.wait(3, "c") is False
    assert retry.wait(1, "d") is True  # the next request starts again at attempt 1
    assert retry.summary() == {"retries": 3, "last_error": "d"}


def test_the_budget_bounds_the_time_spent_waiting():
    retry, fake = policy(retries=100, max_wait=60, budget=25)
    results = [retry.wait(attempt, "HTTP 503", retry_after=10.0) for attempt in (1, 2, 3)]
    assert results == [True, True, False]
    assert fake.sleeps == [10.0, 10.0]  # the wait that would cross the budget is not slept at all
    assert retry.summary()["retries"] == 2


def test_a_wait_longer_than_the_budget_is_not_started():
    retry, fake = policy(max_wait=60, budget=30)
    assert retry.wait(1, "HTTP 429", retry_after=3600.0) is False
    assert fake.sleeps == []


def test_time_spent_working_before_a_fault_does_not_use_up_the_budget():
    # retry_budget is documented as "the most seconds all retries of one run may add up to":
    # ten minutes of successful downloading are no retry, so the first fault after them is
    # still retried.
    retry, fake = policy(retries=5, max_wait=60, budget=300)
    fake.now += 600
    assert retry.wait(1, "download broke off", retry_after=1.0) is True
    assert fake.sleeps == [1.0]


# -- Summary ---------------------------------------------------------------------


def test_a_fresh_policy_reports_nothing():
    assert RetryPolicy().summary() == {"retries": 0, "last_error": ""}


def test_count_and_last_error():
    retry, _fake = policy(budget=1e9)
    retry.wait(1, "registry r answered HTTP 503")
    retry.wait(2, "timed out after 30s talking to r")
    assert retry.count == 2
    assert retry.last_error == "timed out after 30s talking to r"
    assert retry.summary() == {"retries": 2, "last_error": "timed out after 30s talking to r"}


def test_retry_statuses():
    assert _retry.RETRY_STATUSES == frozenset((408, 429, 500, 502, 503, 504))
