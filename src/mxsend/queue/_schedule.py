"""The queue's retry schedule: durations, when a deferred recipient is tried next, when a
message expires or is due a delay warning, and which destinations are left alone for a while.

RFC 5321 4.5.4.1 asks for retries at intervals (it suggests 30 minutes) and a give-up time
of at least 4-5 days; like Postfix, the defaults start at 5 minutes and double up to an hour,
and bounce after 5 days. RFC 1123 5.3.1.1: a destination that failed as a whole is
remembered, so the messages for it wait instead of each trying again. Pure: no Twisted, no
I/O, no clock; times are float seconds since the epoch, passed in, and randomness comes from
the caller.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "MAX_DURATION",
    "DestinationBackoff",
    "RandomSource",
    "RetryPolicy",
    "format_duration",
    "parse_duration",
]

#: The longest duration anything accepts: ten 365-day years.
MAX_DURATION = 10 * 365 * 86400.0

#: Where jitter comes from: a :class:`random.Random`, or a function returning [0, 1).
RandomSource = random.Random | Callable[[], float]

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})([wdhms])")
_MAX_TEXT = 64  # longer texts are refused before any arithmetic


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds in ``text``: a plain number of seconds (``90``, ``1.5``) or parts from the
    largest unit to the smallest, each at most once, with nothing between them (``30s``,
    ``5m``, ``1.5h``, ``1h30m``, ``5d``, ``1w``). Case does not matter and surrounding
    whitespace is ignored. Zero is refused unless ``allow_zero``; anything negative,
    non-finite or longer than :data:`MAX_DURATION` always is. Raises ValueError with a
    one-line message naming ``text``."""
    spec = text.strip().lower()
    if len(spec) > _MAX_TEXT:
        raise ValueError(f"invalid duration {text[:_MAX_TEXT]!r}...: too long")
    if _PLAIN.fullmatch(spec):
        total = Fraction(spec)
    else:
        total = Fraction(0)
        position = 0
        order = list(_UNITS)
        last = -1
        if not spec:
            raise ValueError(f"invalid duration {text!r}: empty")
        while position < len(spec):
            part = _PART.match(spec, position)
            if part is None:
                if spec.startswith("-"):
                    raise ValueError(f"invalid duration {text!r}: must not be negative")
                raise ValueError(
                    f"invalid duration {text!r}: expected seconds or parts like 1h30m "
                    f"(units {', '.join(_UNITS)})"
                )
            rank = order.index(part[2])
            if rank <= last:
                raise ValueError(
                    f"invalid duration {text!r}: units must go from largest to smallest, "
                    "each at most once"
                )
            last = rank
            total += Fraction(part[1]) * _UNITS[part[2]]
            position = part.end()
    if total > Fraction(MAX_DURATION):
        raise ValueError(f"invalid duration {text!r}: longer than 10 years")
    if total == 0 and not allow_zero:
        raise ValueError(f"invalid duration {text!r}: must be more than zero")
    return float(total)


def format_duration(seconds: float) -> str:
    """The compact form of ``seconds``, largest unit first, zero parts left out: ``45s``,
    ``5m``, ``1h30m``, ``5d`` (days are the largest unit written; ``0s`` for zero).
    Fractions are rounded to the millisecond (``1m30.25s``), so :func:`parse_duration` reads
    back whole seconds exactly. Raises ValueError for a negative or non-finite number."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    whole, millis = divmod(round(seconds * 1000), 1000)
    parts = []
    for unit in "dhm":
        count, whole = divmod(whole, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    if whole or millis or not parts:
        rest = f"{whole}.{millis:03d}".rstrip("0").rstrip(".") if millis else str(whole)
        parts.append(f"{rest}s")
    return "".join(parts)


def _draw(rng: RandomSource) -> float:
    value = rng.random() if isinstance(rng, random.Random) else rng()
    if not 0 <= value < 1:
        raise ValueError(f"the random source returned {value!r}, not a number in [0, 1)")
    return value


def _backoff(policy: RetryPolicy, failures: int, draw: float) -> float:
    """``first * 2**(failures-1)`` clamped to ``maximum``, times ``1 + jitter*(2*draw - 1)``."""
    if failures < 1:
        raise ValueError(f"expected a count of failed attempts of at least 1, got {failures!r}")
    nominal = min(policy.first * 2.0 ** min(failures - 1, 64), policy.maximum)
    return nominal * (1 + policy.jitter * (2 * draw - 1))


_SPANS = ("first", "maximum", "lifetime", "bounce_lifetime")


def _check_span(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 < value <= MAX_DURATION)
    ):
        raise ValueError(
            f"retry policy {name}: expected seconds more than 0 and at most "
            f"{MAX_DURATION:g}, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long the queue keeps trying and how often (RFC 5321 4.5.4.1), in seconds.

    A deferred recipient is next tried ``first * 2**(attempts - 1)`` seconds after its
    ``attempts``-th failed attempt, at most ``maximum``, the gap moved by a uniform random
    fraction of up to ``jitter`` either way; so a gap lies in ``[first*(1-jitter),
    maximum*(1+jitter))`` and averages its nominal length (``maximum`` is the nominal ceiling,
    not a hard one). No attempt is put later than the message's expiry: the attempt that
    would fall after it happens right at it instead, and when that one fails too the
    message has expired and is bounced. Defaults: 5 minutes, 1 hour, 5 days in the queue
    (1 day for a bounce, which has the null sender), no delay warning, 10 % jitter.
    """

    first: float = 300.0  #: the first retry, this long after the first failed attempt
    maximum: float = 3600.0  #: the longest nominal gap between attempts
    lifetime: float = 5 * 86400.0  #: a message is bounced after this long in the queue
    bounce_lifetime: float = 86400.0  #: a bounce (null sender) is dropped after this long
    delay_warning: float | None = None  #: a delay DSN is due after this long; None: never
    jitter: float = 0.1  #: gaps move by up to this fraction either way, 0 to 0.5

    def __post_init__(self) -> None:
        for name in _SPANS:
            _check_span(name, getattr(self, name))
        if self.delay_warning is not None:
            _check_span("delay_warning", self.delay_warning)
            if self.delay_warning >= self.lifetime:
                raise ValueError(
                    f"retry policy delay_warning ({format_duration(self.delay_warning)}) must "
                    f"be shorter than lifetime ({format_duration(self.lifetime)})"
                )
        if self.first > self.maximum:
            raise ValueError(
                f"retry policy first ({format_duration(self.first)}) must not be longer than "
                f"maximum ({format_duration(self.maximum)})"
            )
        jitter = self.jitter
        if (
            isinstance(jitter, bool)
            or not isinstance(jitter, int | float)
            or not 0 <= jitter <= 0.5
        ):
            raise ValueError(
                f"retry policy jitter: expected a fraction from 0 to 0.5, got {jitter!r}"
            )

    def expires_at(self, arrival: float, bounce: bool = False) -> float:
        """When a message that arrived at ``arrival`` expires; ``bounce``: it is a bounce,
        sent from the null reverse-path, and gets ``bounce_lifetime``."""
        return arrival + (self.bounce_lifetime if bounce else self.lifetime)

    def expired(self, *, arrival: float, now: float, bounce: bool = False) -> bool:
        """Whether the message has been queued its lifetime: from then on a failed attempt
        bounces it (or, for a bounce, drops it) instead of scheduling another."""
        return now >= self.expires_at(arrival, bounce)

    def next_attempt(
        self,
        *,
        arrival: float,
        attempts: int,
        now: float,
        rng: RandomSource,
        bounce: bool = False,
    ) -> float:
        """When to try a deferred recipient again after its ``attempts``-th failed attempt
        (1 for the first), made at ``now``: ``now`` plus the jittered gap (see the class),
        but never after :meth:`expires_at`, so the last attempt lands right at expiry. When
        ``now`` is already at or past expiry the result is the expiry itself, not after
        ``now``: the message is due a bounce, not another attempt (:meth:`expired`)."""
        gap = _backoff(self, attempts, _draw(rng))
        return min(now + gap, self.expires_at(arrival, bounce))

    def warning_due(
        self, *, arrival: float, now: float, warned: bool, bounce: bool = False
    ) -> bool:
        """Whether a delay DSN (RFC 3464 2.3.3 Action: delayed) is due for a message with
        recipients still deferred: ``delay_warning`` is set, the message has been queued
        that long, none was sent (``warned``), it has not expired (the bounce says more), and
        it is not a bounce (nothing is sent to the null reverse-path, RFC 5321 4.5.5)."""
        if self.delay_warning is None or warned or bounce:
            return False
        return arrival + self.delay_warning <= now < self.expires_at(arrival)

    @classmethod
    def from_options(
        cls,
        first: str | None = None,
        maximum: str | None = None,
        lifetime: str | None = None,
        bounce_lifetime: str | None = None,
        delay_warning: str | None = None,
    ) -> RetryPolicy:
        """A policy from the duration flags ``--retry-first``, ``--retry-max``,
        ``--lifetime``, ``--bounce-lifetime`` and ``--delay-warning`` (see
        :func:`parse_duration`); None keeps the default, and a delay warning of ``0`` or
        ``off`` turns it off. Raises ValueError with a one-line message naming the flag."""
        spans: dict[str, float] = {}
        flags = {
            "first": ("--retry-first", first),
            "maximum": ("--retry-max", maximum),
            "lifetime": ("--lifetime", lifetime),
            "bounce_lifetime": ("--bounce-lifetime", bounce_lifetime),
        }
        for name, (flag, text) in flags.items():
            if text is not None:
                try:
                    spans[name] = parse_duration(text)
                except ValueError as error:
                    raise ValueError(f"{flag}: {error}") from None
        warning = None
        if delay_warning is not None and delay_warning.strip().lower() != "off":
            try:
                warning = parse_duration(delay_warning, allow_zero=True) or None
            except ValueError as error:
                raise ValueError(f"--delay-warning: {error}") from None
        return cls(**spans, delay_warning=warning)


@dataclass(slots=True)
class _Streak:
    failures: int  # consecutive failures of the destination as a whole
    until: float  # left alone until then
    forget_at: float  # the streak is forgotten then, if no failure came since


class DestinationBackoff:
    """Destinations that failed as a whole (no host reachable, or every host refusing at
    the connection with 4xx), left alone for a while (RFC 1123 5.3.1.1).

    The first failure blocks a destination for ``policy.first``; each failure after the
    block ends, before the streak is forgotten, doubles that up to ``policy.maximum``, with
    the policy's jitter. A failure reported while it is still blocked (a session that began
    before the block) changes nothing. The streak is forgotten ``policy.maximum`` after the
    block ends if no failure came, or at once on :meth:`succeed`. At most ``limit``
    destinations are remembered: forgotten ones are pruned, and when it is full the one
    due to be forgotten soonest is dropped, which at worst means an early try.
    ``destination`` is any key the caller chooses, such as a lower-cased domain.
    """

    __slots__ = ("_heap", "_limit", "_policy", "_rng", "_streaks")

    def __init__(
        self, policy: RetryPolicy | None = None, *, rng: RandomSource, limit: int = 10_000
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"destination backoff limit: expected a positive integer, got {limit!r}"
            )
        self._policy = policy if policy is not None else RetryPolicy()
        self._rng = rng
        self._limit = limit
        self._streaks: dict[str, _Streak] = {}
        # (forget_at, destination), soonest first; an item is stale once its destination's
        # streak is gone or has another forget_at.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._streaks)

    def fail(self, destination: str, now: float) -> float:
        """Record that ``destination`` failed as a whole at ``now``; returns until when it
        is left alone."""
        self.prune(now)
        streak = self._streaks.get(destination)
        if streak is not None and now < streak.until:
            return streak.until
        failures = 1 if streak is None else streak.failures + 1
        until = now + _backoff(self._policy, failures, _draw(self._rng))
        if streak is None:
            while len(self._streaks) >= self._limit:
                self._pop_soonest()
        forget_at = until + self._policy.maximum
        self._streaks[destination] = _Streak(failures, until, forget_at)
        heapq.heappush(self._heap, (forget_at, destination))
        if len(self._heap) > 2 * len(self._streaks) + 64:
            self._heap = [(s.forget_at, d) for d, s in self._streaks.items()]
            heapq.heapify(self._heap)
        return until

    def succeed(self, destination: str) -> None:
        """Record that ``destination`` took a connection: it is not blocked any more."""
        self._streaks.pop(destination, None)

    def blocked_until(self, destination: str, now: float) -> float | None:
        """Until when ``destination`` is left alone, or None when it may be tried now."""
        self.prune(now)
        streak = self._streaks.get(destination)
        return streak.until if streak is not None and now < streak.until else None

    def prune(self, now: float) -> int:
        """Forget the streaks due to be forgotten by ``now``; returns how many went."""
        gone = 0
        while self._heap and self._heap[0][0] <= now:
            if self._pop_soonest():
                gone += 1
        return gone

    def _pop_soonest(self) -> bool:
        """Drop the heap's first item, and its streak unless the item was stale."""
        forget_at, destination = heapq.heappop(self._heap)
        streak = self._streaks.get(destination)
        if streak is None or streak.forget_at != forget_at:
            return False
        del self._streaks[destination]
        return True
