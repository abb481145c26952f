"""Delivery options: small frozen values, nested the way a TOML file nests its tables.

::

    helo_name = "mail.example.com"      # DeliveryOptions
    mx_port = 25
    chunking = true
    allow_cleartext_auth = false
    [tls]                               # TLSOptions
    policy = "verify"
    cafile = "/etc/ssl/private-ca.pem"
    [limits]                            # Limits
    parallel = 10
    connections = 2
    [timeouts]                          # Timeouts, seconds per stage (STAGES)
    connect = 30
    [smarthost]                         # Smarthost (credentials come from elsewhere)
    host = "relay.example.com"
    port = 587

``DeliveryOptions.from_table`` maps such a table onto these types one to one and refuses an
unknown key or a wrong type with a :class:`ConfigError` naming its path; ``as_table`` is the
inverse. Pure: no Twisted, no I/O. The stage deadlines follow RFC 5321 4.5.3.2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from mxsend.protocol import Mechanism, MxsendError, Trace
from mxsend.routing import MAX_ADDRESSES, MAX_SESSIONS, TLSPolicy

__all__ = [
    "STAGES",
    "ConfigError",
    "DeliveryOptions",
    "Limits",
    "Smarthost",
    "TLSOptions",
    "Timeouts",
]


class ConfigError(MxsendError):
    """A setting that cannot be used: an unknown key, a wrong type, a value out of range.
    The message names the setting's path (``limits.parallel``) and fits on one line."""


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


_T = TypeVar("_T")


def _scalar(path: str, value: object, kind: type[_T]) -> _T:
    """``value`` if it is a ``kind`` (an int is a float; a bool is never a number)."""
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not ok:
        raise ConfigError(f"{path}: expected {_KIND_NAMES[kind]}, got {value!r}")
    return value  # type: ignore[return-value]


_KIND_NAMES: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _table(path: str, value: object, known: Iterable[str]) -> Mapping[str, object]:
    """``value`` as a table whose keys are all ``known``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a table, got {value!r}")
    allowed = set(known)
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown setting (known: {', '.join(sorted(allowed))})")
    return value


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _timeouts_from_table(value: object, path: str) -> Timeouts:
    table = _table(path, value, STAGES)
    seconds = {k: _scalar(_key(path, k), v, float) for k, v in table.items()}
    for key, number in seconds.items():
        if not (math.isfinite(number) and 0 < number <= _MAX_SECONDS):
            raise ConfigError(f"{_key(path, key)}: seconds must be more than 0 and at most "
                              f"{_MAX_SECONDS:g}")  # fmt: skip
    return Timeouts(**seconds)


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How to treat TLS unless a route's own policy says otherwise."""

    policy: TLSPolicy | None = None  #: None: MAY for MX delivery, VERIFY for a smarthost
    cafile: str | None = None  #: also trust this CA bundle (PEM), beside the system's

    def policy_for(self, smarthost: bool) -> TLSPolicy:
        if self.policy is not None:
            return self.policy
        return TLSPolicy.VERIFY if smarthost else TLSPolicy.MAY

    @classmethod
    def from_table(cls, value: object, path: str = "tls") -> TLSOptions:
        table = _table(path, value, ("policy", "cafile"))
        policy = None
        if "policy" in table:
            name = _scalar(_key(path, "policy"), table["policy"], str)
            try:
                policy = TLSPolicy(name)
            except ValueError:
                choices = ", ".join(p.value for p in TLSPolicy)
                raise ConfigError(f"{_key(path, 'policy')}: expected one of {choices}, "
                                  f"got {name!r}") from None  # fmt: skip
        cafile = None
        if "cafile" in table:
            cafile = _scalar(_key(path, "cafile"), table["cafile"], str)
        return cls(policy, cafile)

    def as_table(self) -> dict[str, object]:
        table: dict[str, object] = {}
        if self.policy is not None:
            table["policy"] = self.policy.value
        if self.cafile is not None:
            table["cafile"] = self.cafile
        return table


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one delivery run may try and hold open."""

    max_addresses: int = MAX_ADDRESSES  #: addresses tried per destination
    max_sessions: int = MAX_SESSIONS  #: sessions per destination that reach SMTP
    parallel: int = 10  #: destinations delivered to at once
    connections: int = 1  #: concurrent sessions per destination, each reused for its share

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"limits.{item.name}: expected a positive integer, got {value!r}")

    @classmethod
    def from_table(cls, value: object, path: str = "limits") -> Limits:
        table = _table(path, value, (f.name for f in fields(cls)))
        return cls(**{k: _scalar(_key(path, k), v, int) for k, v in table.items()})

    def as_table(self) -> dict[str, object]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass(frozen=True, slots=True)
class Smarthost:
    """Relay everything through one host; port 465 means implicit TLS (RFC 8314)."""

    host: str
    port: int = 587
    mechanism: Mechanism | None = None  #: how to authenticate; credentials are not in tables
    tls_on_connect: bool | None = None  #: None: implicit TLS exactly when the port is 465

    @property
    def implicit_tls(self) -> bool:
        return self.port == 465 if self.tls_on_connect is None else self.tls_on_connect

    @classmethod
    def from_table(
        cls, value: object, path: str = "smarthost", mechanism: Mechanism | None = None
    ) -> Smarthost:
        table = _table(path, value, ("host", "port", "tls_on_connect"))
        if "host" not in table:
            raise ConfigError(f"{_key(path, 'host')}: missing")
        port = _scalar(_key(path, "port"), table.get("port", 587), int)
        if not 0 < port < 65536:
            raise ConfigError(f"{_key(path, 'port')}: not a port number: {port}")
        on_connect = table.get("tls_on_connect")
        return cls(
            _scalar(_key(path, "host"), table["host"], str),
            port,
            mechanism,
            None if on_connect is None else _scalar(_key(path, "tls_on_connect"), on_connect, bool),
        )

    def as_table(self) -> dict[str, object]:
        table: dict[str, object] = {"host": self.host, "port": self.port}
        if self.tls_on_connect is not None:
            table["tls_on_connect"] = self.tls_on_connect
        return table


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Everything a delivery run needs besides its messages, its reactor and its resolver."""

    helo_name: str
    mx_port: int = 25
    tls: TLSOptions = field(default_factory=TLSOptions)
    smarthost: Smarthost | None = None
    allow_cleartext_auth: bool = False
    chunking: bool = True  #: use BDAT when offered (RFC 3030)
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    trace: Trace | None = None  #: called with (direction, line) for every line; not in tables

    @property
    def tls_policy(self) -> TLSPolicy:
        """The TLS policy routes get unless something more specific sets one."""
        return self.tls.policy_for(self.smarthost is not None)

    @classmethod
    def from_table(
        cls, value: object, *, mechanism: Mechanism | None = None, trace: Trace | None = None
    ) -> DeliveryOptions:
        """Options from a parsed TOML document (``tomllib.loads``); ``mechanism`` goes to
        the smarthost, since credentials do not belong in the table."""
        simple: dict[str, type] = {
            "helo_name": str,
            "mx_port": int,
            "allow_cleartext_auth": bool,
            "chunking": bool,
        }
        table = _table("", value, [*simple, "tls", "smarthost", "timeouts", "limits"])
        if "helo_name" not in table:
            raise ConfigError("helo_name: missing")
        values: dict[str, Any] = {
            k: _scalar(k, table[k], kind) for k, kind in simple.items() if k in table
        }
        if not 0 < values.get("mx_port", 25) < 65536:
            raise ConfigError(f"mx_port: not a port number: {values['mx_port']}")
        if "tls" in table:
            values["tls"] = TLSOptions.from_table(table["tls"])
        if "smarthost" in table:
            values["smarthost"] = Smarthost.from_table(table["smarthost"], mechanism=mechanism)
        if "timeouts" in table:
            values["timeouts"] = _timeouts_from_table(table["timeouts"], "timeouts")
        if "limits" in table:
            values["limits"] = Limits.from_table(table["limits"])
        return cls(**values, trace=trace)

    def as_table(self) -> dict[str, object]:
        """The table ``from_table`` reads back to equal options (less mechanism and trace)."""
        table: dict[str, object] = {
            "helo_name": self.helo_name,
            "mx_port": self.mx_port,
            "allow_cleartext_auth": self.allow_cleartext_auth,
            "chunking": self.chunking,
            "tls": self.tls.as_table(),
            "timeouts": self.timeouts.as_dict(),
            "limits": self.limits.as_table(),
        }
        if self.smarthost is not None:
            table["smarthost"] = self.smarthost.as_table()
        return table
