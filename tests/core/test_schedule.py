"""The retry schedule: durations, backoff with jitter up to the expiry, delay warnings, and the
memory of dead destinations (RFC 5321 4.5.4.1, RFC 1123 5.3.1.1). Time is plain floats."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxsend.queue._schedule import (
    MAX_DURATION,
    DestinationBackoff,
    RetryPolicy,
    format_duration,
    parse_duration,
)

DAY = 86400.0
T0 = 1_700_000_000.0  # an arrival time; any float would do


def _still() -> float:
    """A draw that moves nothing: jitter * (2 * 0.5 - 1) is 0."""
    return 0.5


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("5d", 5 * DAY),
        ("1w", 7 * DAY),
        ("1h30m", 5400),
        ("2w3d4h5m6s", 17 * DAY + 4 * 3600 + 5 * 60 + 6),
        ("90", 90),
        ("1.5", 1.5),
        ("1.5h", 5400),
        ("1.1h", 3960),  # exact, not 3960.0000000000005
        ("0.5s", 0.5),
        ("1h0.5s", 3600.5),
        ("0h30m", 1800),
        ("007m", 420),
        ("  5M\t", 300),
        ("1H30M", 5400),
        ("3650d", MAX_DURATION),
    ],
)
def test_durations_that_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "-5m",
        "-0",
        "+5m",
        "5x",
        "1.5.2h",
        "1.h",
        ".5h",
        "1,5h",
        "nan",
        "inf",
        "-inf",
        "1e3",
        "0x10",
        "m",
        "h5",
        "5 m",
        "1h 30m",
        "1h30",
        "30m1h",
        "1h1h",
        "5m\n6s",
        "\u0663s",  # ARABIC-INDIC DIGIT THREE is no digit here
        "3651d",
        "99999999999w",
        "9" * 400,
        "1" * 100 + "s",
    ],
)
def test_durations_that_do_not_parse_say_so_on_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(text[:20])[:-1] in message


@pytest.mark.parametrize("text", ["0", "0s", "0.0", "0h0m", " 0 "])
def test_zero_only_where_the_caller_allows_it(text: str) -> None:
    with pytest.raises(ValueError, match="more than zero"):
        parse_duration(text)
    assert parse_duration(text, allow_zero=True) == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (300, "5m"),
        (5400, "1h30m"),
        (5 * DAY, "5d"),
        (7 * DAY, "7d"),  # days are the largest unit written
        (90061, "1d1h1m1s"),
        (3600.25, "1h0.25s"),
        (1.5, "1.5s"),
        (0.0004, "0s"),  # rounded to the millisecond
        (59.9996, "1m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_format_duration_refuses_what_is_no_duration(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=int(MAX_DURATION)))
def test_whole_seconds_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds), allow_zero=True) == seconds


@given(st.floats(min_value=0, max_value=MAX_DURATION))
def test_fractions_round_trip_to_the_millisecond(seconds: float) -> None:
    # Half a millisecond of rounding, plus the float's own error at up to 10**9 seconds.
    error = abs(parse_duration(format_duration(seconds), allow_zero=True) - seconds)
    assert error <= 0.0005 + seconds * 1e-15


@given(st.lists(st.integers(min_value=0, max_value=99), min_size=5, max_size=5))
def test_parts_add_up_in_any_case(counts: list[int]) -> None:
    units = [("w", 7 * DAY), ("d", DAY), ("h", 3600), ("m", 60), ("s", 1)]
    chosen = [(n, u, size) for n, (u, size) in zip(counts, units, strict=True) if n % 3]
    text = "".join(f"{n}{u.upper() if n % 2 else u}" for n, u, _ in chosen) or "0"
    assert parse_duration(text, allow_zero=True) == sum(n * size for n, _, size in chosen)


# -- the schedule ------------------------------------------------------------------------


def test_defaults_follow_the_queue_spec() -> None:
    policy = RetryPolicy()
    assert (policy.first, policy.maximum) == (300, 3600)
    assert (policy.lifetime, policy.bounce_lifetime) == (5 * DAY, DAY)
    assert policy.delay_warning is None
    assert policy.jitter == 0.1


def _gap(policy: RetryPolicy, attempts: int, rng: random.Random | Callable[[], float]) -> float:
    now = T0 + 3600
    return policy.next_attempt(arrival=T0, attempts=attempts, now=now, rng=rng) - now


def test_the_gap_doubles_from_five_minutes_to_an_hour() -> None:
    policy = RetryPolicy()
    gaps = [_gap(policy, n, _still) for n in (1, 2, 3, 4, 5, 6, 50, 10**6)]
    assert gaps == [300, 600, 1200, 2400, 3600, 3600, 3600, 3600]


def test_jitter_stays_within_its_fraction_for_many_seeds() -> None:
    policy = RetryPolicy()
    for seed in range(200):
        rng = random.Random(seed)
        for attempts, nominal in [(1, 300), (2, 600), (4, 2400), (5, 3600), (40, 3600)]:
            gap = _gap(policy, attempts, rng)
            assert nominal * 0.9 <= gap < nominal * 1.1
            assert policy.first * 0.9 <= gap < policy.maximum * 1.1


def test_jitter_reaches_both_ends_and_spreads() -> None:
    policy = RetryPolicy()
    assert _gap(policy, 1, lambda: 0.0) == pytest.approx(270)
    assert _gap(policy, 5, lambda: 0.999999) == pytest.approx(3960, abs=0.01)
    rng = random.Random(7)
    assert len({round(_gap(policy, 5, rng)) for _ in range(50)}) > 40
    assert _gap(RetryPolicy(jitter=0), 5, random.Random(7)) == 3600


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_a_random_source_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="random source"):
        _gap(RetryPolicy(), 1, lambda: value)


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _gap(RetryPolicy(), 0, _still)


def test_no_attempt_is_put_after_the_expiry() -> None:
    policy = RetryPolicy()
    expiry = T0 + 5 * DAY
    assert policy.expires_at(T0) == expiry
    for seed in range(100):
        rng = random.Random(seed)
        now = expiry - rng.uniform(0, 4000)
        due = policy.next_attempt(arrival=T0, attempts=30, now=now, rng=rng)
        assert now < due <= expiry
    # An attempt that would fall after the expiry happens right at it.
    assert policy.next_attempt(arrival=T0, attempts=30, now=expiry - 10, rng=_still) == expiry
    # The attempt at the expiry failed: the message is due its bounce, not another try.
    assert policy.next_attempt(arrival=T0, attempts=31, now=expiry, rng=_still) == expiry
    assert policy.expired(arrival=T0, now=expiry)


def test_expiry_and_the_bounce_lifetime() -> None:
    policy = RetryPolicy()
    assert not policy.expired(arrival=T0, now=T0 + 5 * DAY - 0.001)
    assert policy.expired(arrival=T0, now=T0 + 5 * DAY)
    assert policy.expires_at(T0, bounce=True) == T0 + DAY
    assert not policy.expired(arrival=T0, now=T0 + DAY - 1, bounce=True)
    assert policy.expired(arrival=T0, now=T0 + DAY, bounce=True)
    late = policy.next_attempt(arrival=T0, attempts=9, now=T0 + DAY - 60, rng=_still, bounce=True)
    assert late == T0 + DAY


def _run(policy: RetryPolicy, rng: random.Random, *, bounce: bool = False) -> list[float]:
    """Attempt times for a message every attempt of which fails, up to its bounce."""
    times = [T0]
    while not policy.expired(arrival=T0, now=times[-1], bounce=bounce):
        now = times[-1]
        times.append(
            policy.next_attempt(arrival=T0, attempts=len(times), now=now, rng=rng, bounce=bounce)
        )
    return times


def test_five_days_of_failures() -> None:
    # Without jitter: attempts at 0, 5, 15, 35, 75 and 135 minutes, then hourly until
    # 119h35m, and the last one at exactly 5 days: 124 attempts (1 + 123 retries). Postfix's
    # defaults (300 s to 4000 s backoff, 5 days) come to roughly 110.
    times = _run(RetryPolicy(jitter=0), random.Random(0))
    assert len(times) == 124
    assert [t - T0 for t in times[:7]] == [0, 300, 900, 2100, 4500, 8100, 11700]
    assert times[-1] == T0 + 5 * DAY
    assert times[-2] == T0 + 8100 + 117 * 3600
    # With jitter the count moves by a few, and the last attempt is still at the expiry.
    policy = RetryPolicy()
    for seed in range(20):
        times = _run(policy, random.Random(seed))
        assert 118 <= len(times) <= 130
        assert times[-1] == T0 + 5 * DAY
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0 < g < policy.maximum * 1.1 for g in gaps)
        assert min(gaps[:-1]) >= policy.first * 0.9


def test_a_bounce_gives_up_after_a_day() -> None:
    # 0, 5, 15, 35, 75, 135 minutes, hourly to 23h15m, then 24h: 28 attempts.
    times = _run(RetryPolicy(jitter=0), random.Random(0), bounce=True)
    assert len(times) == 28
    assert times[-1] == T0 + DAY


def test_the_delay_warning() -> None:
    assert not RetryPolicy().warning_due(arrival=T0, now=T0 + 4 * DAY, warned=False)
    policy = RetryPolicy(delay_warning=4 * 3600)
    assert not policy.warning_due(arrival=T0, now=T0 + 4 * 3600 - 1, warned=False)
    assert policy.warning_due(arrival=T0, now=T0 + 4 * 3600, warned=False)
    assert policy.warning_due(arrival=T0, now=T0 + 4 * DAY, warned=False)
    assert not policy.warning_due(arrival=T0, now=T0 + 4 * DAY, warned=True)
    assert not policy.warning_due(arrival=T0, now=T0 + 5 * DAY, warned=False)  # bounced now
    assert not policy.warning_due(arrival=T0, now=T0 + 5 * 3600, warned=False, bounce=True)


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"first": 0}, "first: expected seconds"),
        ({"first": -300}, "first: expected seconds"),
        ({"first": True}, "first: expected seconds"),
        ({"first": "300"}, "first: expected seconds"),
        ({"maximum": float("nan")}, "maximum: expected seconds"),
        ({"lifetime": float("inf")}, "lifetime: expected seconds"),
        ({"lifetime": MAX_DURATION + 1}, "lifetime: expected seconds"),
        ({"bounce_lifetime": 0}, "bounce_lifetime: expected seconds"),
        ({"delay_warning": 0}, "delay_warning: expected seconds"),
        ({"delay_warning": 5 * DAY}, r"delay_warning \(5d\) must be shorter than lifetime"),
        ({"first": 7200}, r"first \(2h\) must not be longer than maximum \(1h\)"),
        ({"maximum": 60}, r"first \(5m\) must not be longer than maximum \(1m\)"),
        ({"jitter": -0.1}, "jitter: expected a fraction"),
        ({"jitter": 0.6}, "jitter: expected a fraction"),
        ({"jitter": float("nan")}, "jitter: expected a fraction"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(settings: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        RetryPolicy(**settings)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_edge_policies_are_fine() -> None:
    RetryPolicy(first=60, maximum=60, jitter=0)
    RetryPolicy(jitter=0.5, delay_warning=5 * DAY - 1)


def test_from_options() -> None:
    assert RetryPolicy.from_options() == RetryPolicy()
    assert RetryPolicy.from_options(None, None, None, None, None) == RetryPolicy()
    policy = RetryPolicy.from_options("1m", "2H", "3d", "12h", "4h")
    assert policy == RetryPolicy(
        first=60, maximum=7200, lifetime=3 * DAY, bounce_lifetime=12 * 3600, delay_warning=14400
    )
    for off in ("0", "0s", "off", " OFF "):
        assert RetryPolicy.from_options(delay_warning=off).delay_warning is None


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"first": "5x"}, "--retry-first: invalid duration '5x'"),
        ({"maximum": "0"}, "--retry-max: invalid duration '0'"),
        ({"lifetime": "-1d"}, "--lifetime: invalid duration '-1d'"),
        ({"bounce_lifetime": ""}, "--bounce-lifetime: invalid duration ''"),
        ({"delay_warning": "soon"}, "--delay-warning: invalid duration 'soon'"),
        ({"first": "2h"}, r"first \(2h\) must not be longer than maximum \(1h\)"),
    ],
)
def test_from_options_names_the_flag(settings: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        RetryPolicy.from_options(**settings)


# -- dead destinations -------------------------------------------------------------------


def test_a_failed_destination_is_left_alone_for_five_minutes() -> None:
    backoff = DestinationBackoff(rng=random.Random(1))
    assert backoff.blocked_until("example.com", T0) is None
    until = backoff.fail("example.com", T0)
    assert T0 + 270 <= until < T0 + 330
    assert backoff.blocked_until("example.com", T0 + 1) == until
    assert backoff.blocked_until("example.com", until - 0.001) == until
    assert backoff.blocked_until("example.com", until) is None
    assert backoff.blocked_until("example.org", T0 + 1) is None


def test_consecutive_failures_double_the_wait_up_to_the_maximum() -> None:
    backoff = DestinationBackoff(rng=_still)
    now, waits = T0, []
    for _ in range(8):
        until = backoff.fail("example.com", now)
        waits.append(until - now)
        now = until + 30  # tried again soon after the block ends, and failed again
    assert waits == [300, 600, 1200, 2400, 3600, 3600, 3600, 3600]


def test_jitter_applies_to_destinations_too() -> None:
    for seed in range(50):
        backoff = DestinationBackoff(rng=random.Random(seed))
        now = T0
        for nominal in (300, 600, 1200, 2400, 3600, 3600):
            until = backoff.fail("example.com", now)
            assert nominal * 0.9 <= until - now < nominal * 1.1
            now = until


def test_a_failure_while_blocked_changes_nothing() -> None:
    backoff = DestinationBackoff(rng=_still)
    until = backoff.fail("example.com", T0)
    assert backoff.fail("example.com", T0 + 10) == until  # a session begun before the block
    assert backoff.fail("example.com", until) - until == 600  # the next real failure


def test_success_clears_the_streak() -> None:
    backoff = DestinationBackoff(rng=_still)
    until = backoff.fail("example.com", T0)
    until = backoff.fail("example.com", until)
    backoff.succeed("example.com")
    assert backoff.blocked_until("example.com", T0 + 1) is None
    assert len(backoff) == 0
    assert backoff.fail("example.com", until) - until == 300
    backoff.succeed("never-failed.example")


def test_the_streak_is_forgotten_a_maximum_after_the_block() -> None:
    backoff = DestinationBackoff(rng=_still)
    until = backoff.fail("example.com", T0)
    assert backoff.fail("example.com", until + 3599) - (until + 3599) == 600
    backoff = DestinationBackoff(rng=_still)
    until = backoff.fail("example.com", T0)
    assert backoff.prune(until + 3599) == 0
    assert backoff.prune(until + 3600) == 1
    assert len(backoff) == 0
    assert backoff.fail("example.com", until + 3600) - (until + 3600) == 300


def test_memory_is_bounded_dropping_the_soonest_forgotten() -> None:
    policy = RetryPolicy(jitter=0)
    backoff = DestinationBackoff(policy, rng=_still, limit=3)
    backoff.fail("a.example", T0)  # 300 s
    backoff.fail("b.example", T0)
    until = backoff.fail("b.example", T0 + 300)  # 600 s: forgotten later than a
    backoff.fail("c.example", T0 + 1)
    backoff.fail("d.example", T0 + 2)
    assert len(backoff) == 3
    assert backoff.blocked_until("a.example", T0 + 3) is None  # dropped
    assert backoff.blocked_until("b.example", T0 + 303) == until
    assert backoff.blocked_until("c.example", T0 + 3) == T0 + 301
    assert backoff.blocked_until("d.example", T0 + 3) == T0 + 302


def test_ten_thousand_destinations_and_no_more() -> None:
    backoff = DestinationBackoff(rng=random.Random(3))
    for n in range(25_000):
        backoff.fail(f"d{n}.example", T0 + n * 0.01)
    assert len(backoff) == 10_000
    assert backoff.blocked_until("d24999.example", T0 + 250) is not None
    assert backoff.prune(T0 + DAY) == 10_000
    assert len(backoff) == 0


def test_one_flapping_destination_does_not_grow_the_memory() -> None:
    backoff = DestinationBackoff(rng=random.Random(5))
    now = T0
    for _ in range(5_000):
        now = backoff.fail("example.com", now)
        backoff.succeed("example.com")
        backoff.fail("example.com", now)
    assert len(backoff) == 1
    assert len(backoff._heap) <= 2 * len(backoff) + 64  # stale entries are compacted


@pytest.mark.parametrize("limit", [0, -1, True])
def test_the_limit_is_a_positive_integer(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        DestinationBackoff(rng=_still, limit=limit)
