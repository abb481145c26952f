"""Deadlines for each stage of a session, with RFC 5321 4.5.3.2's defaults.

Every deadline is absolute: it starts when the stage begins and is not extended by bytes that
trickle in without completing a reply (a server dripping a byte a second cannot hold a session).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

__all__ = ["STAGES", "Timeouts"]

#: stage -> (default seconds, what it bounds). The reply stages follow RFC 5321 4.5.3.2;
#: connect, ehlo, starttls, auth and quit follow Postfix's smtp_*_timeout defaults.
STAGES: dict[str, tuple[float, str]] = {
    "connect": (30, "the TCP connection"),
    "greeting": (300, "the 220 greeting, after the TLS handshake on port 465 (4.5.3.2.1)"),
    "ehlo": (300, "the reply to EHLO or HELO"),
    "starttls": (300, "the reply to STARTTLS and the TLS handshake"),
    "auth": (300, "each AUTH reply"),
    "mail": (300, "the reply to MAIL, and to RSET (4.5.3.2.2)"),
    "rcpt": (300, "each RCPT reply (4.5.3.2.3)"),
    "data": (120, "the 354 to DATA (4.5.3.2.4)"),
    "block": (180, "each block of content until the server takes it (4.5.3.2.5)"),
    "final": (600, "the reply after the end of data, '.' or BDAT (4.5.3.2.6)"),
    "quit": (300, "the reply to QUIT"),
}

# ClientConnection.awaiting names the command a reply answers; this maps it to its stage.
_STAGE_OF_REPLY = {
    "greeting": "greeting",
    "EHLO": "ehlo",
    "HELO": "ehlo",
    "STARTTLS": "starttls",
    "TLS handshake": "starttls",
    "AUTH": "auth",
    "MAIL": "mail",
    "RSET": "mail",
    "NOOP": "mail",
    "RCPT": "rcpt",
    "DATA": "data",
    ".": "final",
    "BDAT": "final",
    "QUIT": "quit",
}

# Longer than any session should take, short enough for the reactor's timer arithmetic.
_MAX_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed for each stage (see :data:`STAGES`)."""

    connect: float = STAGES["connect"][0]
    greeting: float = STAGES["greeting"][0]
    ehlo: float = STAGES["ehlo"][0]
    starttls: float = STAGES["starttls"][0]
    auth: float = STAGES["auth"][0]
    mail: float = STAGES["mail"][0]
    rcpt: float = STAGES["rcpt"][0]
    data: float = STAGES["data"][0]
    block: float = STAGES["block"][0]
    final: float = STAGES["final"][0]
    quit: float = STAGES["quit"][0]

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not (isinstance(value, int | float) and 0 < value <= _MAX_SECONDS):
                raise ValueError(f"timeout for {item.name} must be 0 < seconds <= {_MAX_SECONDS:g}")

    @staticmethod
    def stage_of(awaited: str) -> str:
        """The stage whose deadline applies while the reply to ``awaited`` is due."""
        return _STAGE_OF_REPLY.get(awaited, "mail")

    def for_reply(self, awaited: str) -> float:
        """Seconds to wait for the reply to ``awaited`` (a ``ClientConnection.awaiting``
        name such as ``"RCPT"`` or ``"."``)."""
        return float(getattr(self, self.stage_of(awaited)))

    def as_dict(self) -> dict[str, float]:
        return {item.name: float(getattr(self, item.name)) for item in fields(self)}

    def with_specs(self, specs: Iterable[str]) -> Timeouts:
        """These timeouts with ``STAGE=SECONDS`` settings applied in order; ``all=N`` sets
        every stage. Raises ValueError with a one-line message for a bad setting."""
        changes: dict[str, float] = {}
        for spec in specs:
            stage, sep, value = spec.partition("=")
            stage = stage.strip().lower()
            if not sep or (stage not in STAGES and stage != "all"):
                raise ValueError(
                    f"expected STAGE=SECONDS with STAGE one of all, {', '.join(STAGES)}; "
                    f"got {spec!r}"
                )
            seconds = _seconds(value, spec)
            if stage == "all":
                changes = dict.fromkeys(STAGES, seconds)
            else:
                changes[stage] = seconds
        return replace(self, **changes)


def _seconds(text: str, spec: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds in {spec!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= _MAX_SECONDS):
        raise ValueError(f"seconds must be more than 0 and at most {_MAX_SECONDS:g} in {spec!r}")
    return seconds
