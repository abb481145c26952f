"""The settings a config file holds, as small frozen values. None means "not in the file":
the command line, then the built-in default, decides."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mxsend.routing import TLSPolicy
    from mxsend.routing._table import DomainRoute, RouteTable

__all__ = [
    "DELIVERY_MODES",
    "DKIM_ALGORITHMS",
    "LOG_FORMATS",
    "Config",
    "DaemonSettings",
    "DkimKeyConfig",
    "RetrySettings",
    "SendmailSettings",
    "SubmitRule",
]

LOG_FORMATS = ("text", "json")
#: mxsend-sendmail's -odb, -odi and -odq.
DELIVERY_MODES = ("background", "interactive", "queue")
DKIM_ALGORITHMS = ("rsa", "ed25519")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """``[retry]``, in seconds; ``delay_warning`` 0 turns the warning off."""

    first: float | None = None
    max: float | None = None
    lifetime: float | None = None
    bounce_lifetime: float | None = None
    delay_warning: float | None = None


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """``[daemon]``: ``mxsend daemon``'s --workers, --connections, --processes, --poll,
    --grace (the last two in seconds), --submit-socket (an absolute path, "" for none) and
    --commit-interval (seconds, 0 to 60; also ``queue run``'s)."""

    workers: int | None = None
    connections: int | None = None
    processes: int | None = None
    poll: float | None = None
    grace: float | None = None
    submit_socket: str | None = None  #: "" for none
    commit_interval: float | None = None


@dataclass(frozen=True, slots=True)
class SendmailSettings:
    """``[sendmail]``: how mxsend-sendmail submits (``delivery`` one of
    :data:`DELIVERY_MODES`), whether a message with no To/Cc gets an
    ``undisclosed-recipients`` To, an envelope sender forced on every message but bounces,
    and a domain whose subdomains the envelope sender (and a From that is added) lose, as
    Postfix's masquerade_domains: ``a@mail.example.com`` becomes ``a@example.com``."""

    delivery: str | None = None
    undisclosed_recipients: bool | None = None
    force_sender: str | None = None
    masquerade_domain: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitRule:
    """One ``[[submit.allow]]``: the submitters it is about (a ``user`` name, ``*`` for
    everyone; a ``uid``; or a ``group``) and the envelope senders they may set: ``*``
    (any, the null sender too), ``*@example.com``, ``alice@example.com``, or ``<>``."""

    senders: tuple[str, ...]
    user: str | None = None
    uid: int | None = None
    group: str | None = None

    def applies_to(self, user: str, uid: int, groups: Collection[str]) -> bool:
        if self.user is not None:
            return self.user in ("*", user)
        if self.uid is not None:
            return self.uid == uid
        return self.group in groups

    def allows(self, sender: str) -> bool:
        """Whether ``sender`` ("" for the null sender) is one of :attr:`senders`."""
        return any(_sender_matches(pattern, sender) for pattern in self.senders)


def _sender_matches(pattern: str, sender: str) -> bool:
    if pattern == "*":
        return True
    if pattern == "<>" or not sender:
        return pattern == "<>" and not sender
    local, _, domain = sender.rpartition("@")
    want_local, _, want_domain = pattern.rpartition("@")
    # Domains are case-insensitive (RFC 5321 2.4); local parts are the receiver's business.
    return domain.lower() == want_domain.lower() and (want_local in ("*", local))


@dataclass(frozen=True, slots=True)
class DkimKeyConfig:
    """One signing key of a sender domain: ``[[dkim."example.com"]]``."""

    selector: str
    key_file: str
    algorithm: str = "rsa"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a config file says. ``path`` is the file read (None: no file, every
    setting unset). Top-level keys mirror the file's: ``hostname`` (the EHLO name and
    Reporting-MTA), ``sender`` (default envelope sender), ``domain`` (for bare local names),
    ``queue_dir``, ``log_format``, ``dns`` (host, port), ``mx_port``, ``tls`` (the policy of
    destinations whose route sets none; never of a route with AUTH, which is verified),
    ``cafile``, ``chunking``, ``allow_cleartext_auth``.
    ``routes`` and ``dkim`` are keyed by lower-case domain."""

    path: str | None = None
    hostname: str | None = None
    sender: str | None = None
    domain: str | None = None
    queue_dir: str | None = None
    log_format: str | None = None
    dns: tuple[str, int] | None = None
    mx_port: int | None = None
    tls: TLSPolicy | None = None
    cafile: str | None = None
    chunking: bool | None = None
    allow_cleartext_auth: bool | None = None
    retry: RetrySettings = field(default_factory=RetrySettings)
    timeouts: Mapping[str, float] = field(default_factory=dict)  #: stage -> seconds, as set
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    sendmail: SendmailSettings = field(default_factory=SendmailSettings)
    submit: tuple[SubmitRule, ...] = ()
    routes: Mapping[str, DomainRoute] = field(default_factory=dict)
    dkim: Mapping[str, tuple[DkimKeyConfig, ...]] = field(default_factory=dict)

    def route_table(self) -> RouteTable | None:
        """The ``[routes]`` as a table for the Deliverer; None when there are none."""
        from mxsend.routing._table import RouteTable  # noqa: PLC0415 - keeps import cheap

        return RouteTable(dict(self.routes)) if self.routes else None

    def sender_allowed(self, sender: str, *, user: str, uid: int, groups: Collection[str]) -> bool:
        """Whether a ``[[submit.allow]]`` rule that applies to a submitter (``user``, ``uid``,
        member of ``groups``) lets them set the envelope ``sender`` ("" for <>). Beyond the
        rules, root may set any and every user their own address and <>: the daemon's
        ``SenderPolicy`` (mxsend.queue._intake) says so."""
        return any(r.applies_to(user, uid, groups) and r.allows(sender) for r in self.submit)

    def redacted(self) -> Config:
        """The same settings with every secret replaced (see ``Auth.redacted``)."""
        routes = {
            key: route if route.auth is None else replace(route, auth=route.auth.redacted())
            for key, route in self.routes.items()
        }
        return replace(self, routes=routes)
