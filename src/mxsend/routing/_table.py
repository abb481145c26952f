"""Routes given per recipient domain (a config file's ``[routes]``): through a relay or to the
domain's MX hosts, under which TLS policy, with which AUTH, and how many sessions and
messages a destination may take. Pure values; the Twisted shell acts on them.

A table's keys are ``example.com`` (that domain), ``.example.com`` (its subdomains) and
``*`` (every other domain). A route names everything about its destination: a key it leaves
out takes the built-in default, never the value of ``*``.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace

from mxsend.routing._policy import PolicySource, TLSPolicy

__all__ = [
    "AUTH_MECHANISMS",
    "Auth",
    "DomainRoute",
    "Rate",
    "Relay",
    "RouteTable",
    "secret_file_problem",
    "stricter",
]

#: The SASL mechanisms a route may name. XOAUTH2 and OAUTHBEARER (RFC 7628) take a bearer
#: token as their secret, which expires: a ``password_command`` is re-run when refused.
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER")

_STRENGTH = {TLSPolicy.NONE: 0, TLSPolicy.MAY: 1, TLSPolicy.ENCRYPT: 2, TLSPolicy.VERIFY: 3}


def stricter(first: TLSPolicy, second: TLSPolicy) -> TLSPolicy:
    """The stricter of two policies: none < may < encrypt < verify."""
    return first if _STRENGTH[first] >= _STRENGTH[second] else second


def secret_file_problem(mode: int) -> str | None:
    """Why a file of ``st_mode`` must not hold a secret (an AUTH ``password_file``), or
    None: it must be a regular file (a FIFO would block the reader) that others can
    neither read nor write, and its group not write; group-readable is fine."""
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    bits = stat.S_IMODE(mode)
    if bits & 0o007:
        return f"is open to other users (mode {bits:04o}): chmod o-rwx it"
    if bits & 0o020:
        return f"is writable by its group (mode {bits:04o}): chmod g-w it"
    return None


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


@dataclass(frozen=True, slots=True, repr=False)
class Auth:
    """AUTH for a relay: the user name, the mechanism, and where its secret (a password, or
    a token for XOAUTH2/OAUTHBEARER) comes from: a file's first line, a command's output
    (run with no shell), or given here (never from a file: the command line's
    ``MXSEND_PASSWORD``). Its repr is :meth:`redacted`'s: a command's arguments may hold
    secrets too."""

    username: str
    mechanism: str = "PLAIN"
    password_file: str | None = None
    password_command: tuple[str, ...] | None = None
    password: str | None = None

    def redacted(self) -> Auth:
        """The same without anything secret: a command keeps only its program name."""
        command = self.password_command
        if command is not None and len(command) > 1:
            command = (command[0], "<redacted>")
        password = None if self.password is None else "<redacted>"
        return Auth(self.username, self.mechanism, self.password_file, command, password)

    def __repr__(self) -> str:
        shown = self.redacted()
        return (
            f"Auth(username={shown.username!r}, mechanism={shown.mechanism!r}, "
            f"password_file={shown.password_file!r}, "
            f"password_command={shown.password_command!r}, password={shown.password!r})"
        )


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """How one destination's mail goes. ``relay`` None: to the domain's MX hosts; ``tls``
    None: the default (see :meth:`RouteTable.policy`: verify for a route with ``auth``);
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
    """Routes by recipient domain (keys as the module says, lower-case A-labels).

    ``default_tls`` is the policy of routes that set none (a config file's top-level
    ``tls``); ``tls_floor`` a policy no destination goes below (``--tls`` given on the
    command line, which wins over the file)."""

    routes: Mapping[str, DomainRoute]
    default_tls: TLSPolicy | None = None
    tls_floor: TLSPolicy | None = None

    def policy(
        self, route: DomainRoute, option: TLSPolicy | None = None
    ) -> tuple[TLSPolicy, PolicySource]:
        """The TLS policy ``route`` gets and where it came from: its own ``tls``; else
        verify when it sends AUTH (credentials go only to a verified relay, whatever a
        global policy says); else :attr:`default_tls`, else ``option`` (the delivery
        options' policy), else verify for a relay and may for MX hosts. Then raised to
        :attr:`tls_floor`."""
        if route.tls is not None:
            found = route.tls, PolicySource.CONFIG
        elif route.auth is not None:
            found = TLSPolicy.VERIFY, PolicySource.DEFAULT
        elif (given := self.default_tls or option) is not None:
            found = given, PolicySource.OPTION
        else:
            found = (TLSPolicy.VERIFY if route.relay else TLSPolicy.MAY), PolicySource.DEFAULT
        return self.floored(*found)

    def floored(self, policy: TLSPolicy, source: PolicySource) -> tuple[TLSPolicy, PolicySource]:
        """``policy`` raised to :attr:`tls_floor` when that is stricter."""
        floor = self.tls_floor
        if floor is None or stricter(policy, floor) is policy:
            return policy, source
        return floor, PolicySource.OPTION

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
        return replace(self, routes={k: v for k, v in self.routes.items() if k != "*"})
