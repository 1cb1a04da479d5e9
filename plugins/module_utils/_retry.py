# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When and how long to wait before trying a registry request again.

Connection errors, timeouts, 408, 429 and 5xx are worth another try;
``Retry-After`` (seconds or an HTTP date) is honoured up to ``max_wait``
rather than clamped to a few seconds; otherwise the wait grows
exponentially with jitter. ``retries`` bounds the tries of one request and
``budget`` the time all waits of a run add up to, so a dead registry fails in
bounded time while a long, healthy download keeps its right to retry.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time

RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))
_BACKOFF_BASE = 0.5


def retry_after_seconds(value, now=None):
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryPolicy:
    """Counts retries and sleeps between them; ``count`` and ``last_error`` go into results."""

    def __init__(self, retries=5, max_wait=60.0, budget=300.0, sleep=time.sleep):
        self.retries = retries
        self.max_wait = max_wait
        self.budget = budget
        self._sleep = sleep
        self.waited = 0.0
        self.count = 0
        self.last_error = ""
        # Parallel layer downloads share the policy: the budget is one for the run.
        self._lock = threading.Lock()

    def wait(self, attempt, error, retry_after=None):
        """Sleep before try ``attempt + 1`` after ``error``; False when no retry is left.

        ``attempt`` counts the tries of this request so far (1 after the first).
        """
        if retry_after is not None:
            delay = min(retry_after, self.max_wait)
        else:
            delay = min(self.max_wait, _BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        with self._lock:
            self.last_error = error
            if attempt > self.retries or self.waited + delay > self.budget:
                return False
            self.count += 1
            self.waited += delay
        self._sleep(delay)
        return True

    def summary(self):
        return {"retries": self.count, "last_error": self.last_error}
