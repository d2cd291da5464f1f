"""The retry schedule (RFC 5321 4.5.4.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_queue import RetrySchedule
from smtp_queue._settings import DEFAULT_RETRY_DELAYS, MAX_QUEUE_LIFETIME


def test_default_schedule_minutes_then_hours_then_five_days() -> None:
    """RFC 5321 4.5.4.1: retries from minutes growing to hours; give up after
    4-5 days (Postfix: 5 days)."""
    schedule = RetrySchedule(jitter=0.0)
    assert schedule.max_age == MAX_QUEUE_LIFETIME == 5 * 86400
    delays = [schedule.delay(n) for n in range(1, 10)]
    assert delays[0] == 300.0  # first retry after minutes
    assert delays == sorted(delays)  # never shrinking
    assert delays[-1] == 4 * 3600.0  # growing to hours, then repeating
    # From the third retry on, at least the RFC's 30 minutes.
    assert all(d >= 1800 for d in delays[2:])
    assert schedule.delays == DEFAULT_RETRY_DELAYS


def test_next_attempt_is_capped_at_expiry() -> None:
    """RFC 5321 4.5.4.1: one last attempt at the give-up time, not after it."""
    schedule = RetrySchedule((100.0,), max_age=250.0, jitter=0.0)
    assert schedule.next_attempt(now=0, arrival=0, failures=1) == 100
    assert schedule.next_attempt(now=200, arrival=0, failures=3) == 250
    # Past expiry already: due now, never in the past.
    assert schedule.next_attempt(now=900, arrival=0, failures=9) == 900


@given(st.integers(1, 50), st.floats(0, 1))
def test_jitter_stays_within_its_band(failures: int, spread: float) -> None:
    """Jitter spreads retries by at most the configured fraction either way."""
    schedule = RetrySchedule(jitter=0.2)
    base = RetrySchedule(jitter=0.0).delay(failures)
    assert base * 0.8 <= schedule.delay(failures, spread) <= base * 1.2


def test_exponential_schedule_like_postfix() -> None:
    """Postfix: minimal_backoff_time doubling up to maximal_backoff_time."""
    schedule = RetrySchedule.exponential(300, 2, 4000, jitter=0)
    assert schedule.delays == (300.0, 600.0, 1200.0, 2400.0, 4000.0)
    assert RetrySchedule.exponential(60, 1, 60).delays == (60.0, 60.0)
    with pytest.raises(ValueError, match="first > 0"):
        RetrySchedule.exponential(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delays": ()}, "retry delays"),
        ({"delays": (-1.0,)}, "retry delays"),
        ({"max_age": 0}, "max_age"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_schedule_rejects_nonsense(kwargs: dict[str, object], match: str) -> None:
    """A schedule that could retry in the past, never, or negatively is refused."""
    with pytest.raises(ValueError, match=match):
        RetrySchedule(**kwargs)  # type: ignore[arg-type]
