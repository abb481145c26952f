"""Routes given per recipient domain (a config file's ``[routes]``): through a relay or to the
domain's MX hosts, under which TLS policy, with which AUTH, and how many sessions and
messages a destination may take. Pure values; the Twisted shell acts on them.

A table's keys are ``example.com`` (that domain), ``.example.com`` (its subdomains) and
``*`` (every other domain). A route names everything about its destination: a key it leaves
out takes the built-in default, never the value of ``*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mxsend.routing._policy import TLSPolicy

__all__ = [
    "AUTH_MECHANISMS",
    "Auth",
    "DomainRoute",
    "Rate",
    "Relay",
    "RouteTable",
]

#: The SASL mechanisms a route may name. XOAUTH2 and OAUTHBEARER (RFC 7628) take a bearer
#: token as their secret, which expires: a ``password_command`` is re-run when refused.
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER")


@dataclass(frozen=True, slots=True)
class Relay:
    """One host taking all of a route's mail: its own addresses, never its MX records."""

    host: str
    port: int = 587

    @property
    def implicit_tls(self) -> bool:
        """Port 465 is TLS from the first byte (RFC 8314 3.3)."""
        return self.port == 465

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` messages every ``seconds`` to one destination."""

    count: int
    seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or not self.seconds > 0:
            raise ValueError(f"a rate needs a count of 1 or more per positive time: {self!r}")


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH for a relay: the user name, the mechanism, and where its secret (a password, or
    a token for XOAUTH2/OAUTHBEARER) comes from: a file's first line, a command's output
    (run with no shell), or given here (never from a file: the command line's
    ``MXSEND_PASSWORD``)."""

    username: str
    mechanism: str = "PLAIN"
    password_file: str | None = None
    password_command: tuple[str, ...] | None = None
    password: str | None = field(default=None, repr=False)

    def redacted(self) -> Auth:
        """The same without anything secret: a command keeps only its program name."""
        command = self.password_command
        if command is not None and len(command) > 1:
            command = (command[0], "<redacted>")
        password = None if self.password is None else "<redacted>"
        return Auth(self.username, self.mechanism, self.password_file, command, password)


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """How one destination's mail goes. ``relay`` None: to the domain's MX hosts; ``tls``
    None: the default (the options' policy, else verify for a relay, may for MX hosts);
    ``concurrency`` None: the delivery's own connection limit; ``rate`` None: no limit."""

    relay: Relay | None = None
    tls: TLSPolicy | None = None
    auth: Auth | None = None
    concurrency: int | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        if self.auth is not None and self.relay is None:
            raise ValueError("AUTH is only ever sent to a relay, and this route has none")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, not {self.concurrency}")


@dataclass(frozen=True)
class RouteTable:
    """Routes by recipient domain (keys as the module says, lower-case A-labels)."""

    routes: Mapping[str, DomainRoute]

    def match(self, domain: str) -> tuple[str, DomainRoute] | None:
        """The key and route for ``domain``: the domain itself, else its nearest parent's
        ``.parent`` key, else ``*``; None when nothing matches."""
        name = domain.lower().rstrip(".")
        routes = self.routes
        if name in routes:
            return name, routes[name]
        labels = name.split(".")
        for start in range(1, len(labels)):
            key = "." + ".".join(labels[start:])
            if key in routes:
                return key, routes[key]
        if "*" in routes:
            return "*", routes["*"]
        return None

    def without_default(self) -> RouteTable:
        """This table less its ``*`` route (a smarthost given on the command line replaces
        it, AUTH and all)."""
        return RouteTable({k: v for k, v in self.routes.items() if k != "*"})
