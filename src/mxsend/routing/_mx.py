"""Where mail for a domain goes, decided with no I/O (RFC 5321 5.1, RFC 7505)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mxsend.protocol import MxsendError, Reply

__all__ = [
    "MAX_ADDRESSES",
    "MAX_SESSIONS",
    "MXHost",
    "RouteError",
    "interleave",
    "order_mx",
]

# Postfix's smtp_mx_address_limit and smtp_mx_session_limit: how many addresses to try, and
# how many of them may get as far as an SMTP session, before deferring.
MAX_ADDRESSES = 5
MAX_SESSIONS = 2


class RouteError(MxsendError):
    """No route: ``reply`` says why and whether it is worth retrying."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MXHost:
    """A mail exchanger: its name (kept for SNI and certificate checks), preference, and
    addresses in the order to try them. ``implicit`` marks the domain itself used as its own
    MX because it has none (RFC 5321 5.1)."""

    name: str
    preference: int
    addresses: tuple[str, ...] = ()
    implicit: bool = False


def order_mx(
    records: Iterable[tuple[int, str]], rng: random.Random | None = None
) -> list[tuple[int, str]]:
    """Sort (preference, host) by preference, shuffling equal ones (RFC 5321 5.1); host names
    are lower-cased without the final dot, and a host listed twice keeps its best preference.
    Raises :class:`RouteError` 556 5.1.10 for a null MX (RFC 7505)."""
    best: dict[str, int] = {}
    null = False
    for preference, host in records:
        name = host.rstrip(".").lower()
        if not name:
            null = True
            continue
        if name not in best or preference < best[name]:
            best[name] = preference
    if null and not best:
        raise RouteError(Reply.synthesized(556, "5.1.10", "domain accepts no mail (null MX)"))
    shuffle = (rng or random.Random()).random
    # A random key per host, then a stable sort by preference: ties end up shuffled.
    keyed = sorted(best.items(), key=lambda item: (item[1], shuffle()))
    return [(preference, name) for name, preference in keyed]


def interleave(ipv6: Sequence[str], ipv4: Sequence[str]) -> tuple[str, ...]:
    """Alternate address families, IPv6 first (RFC 8305 4), so one broken family does not use
    up every attempt."""
    out: list[str] = []
    for index in range(max(len(ipv6), len(ipv4))):
        out.extend(family[index] for family in (ipv6, ipv4) if index < len(family))
    return tuple(out)
