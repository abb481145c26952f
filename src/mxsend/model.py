"""The values every room shares: a message, what became of each recipient, and one JSON codec
for those reports (``--json`` today; the queue, bounces and a status page read the same).

Pure values: this module imports no Twisted, no TLS library and no event loop (a test checks),
so anything that only needs to read a report can import it alone. It builds on the core's value
types (:class:`~mxsend.protocol.Envelope`, :class:`~mxsend.protocol.Reply`,
:class:`~mxsend.protocol.Status`, :class:`~mxsend.protocol.Content`); :class:`Message` is the
core's own, re-exported here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mxsend.protocol._events import Status
from mxsend.protocol._reply import EnhancedStatus, Reply
from mxsend.protocol._session import Message
from mxsend.protocol._values import fast_init

__all__ = [
    "REPORT_FORMAT",
    "FailureKind",
    "Message",
    "MessageReport",
    "RecipientReport",
    "TLSInfo",
    "printable",
    "report_from_json",
    "report_to_json",
]

#: Version of the JSON form of a report; bumped when a field changes meaning.
REPORT_FORMAT = 1


class FailureKind(enum.Enum):
    """Why a recipient was not delivered, when the answer is not simply the server's reply."""

    REPLY = "reply"  #: the server's reply to the transaction decided it
    DNS = "dns"  #: the route could not be found (NXDOMAIN, null MX, SERVFAIL, time-out)
    CONNECT = "connect"  #: no mail host could be reached
    REFUSED = "refused"  #: the greeting or EHLO was refused
    CLOSING = "closing"  #: the server closed the session (421)
    TLS_REQUIRED = "tls-required"  #: the policy requires TLS and it could not be had
    TLS_HANDSHAKE = "tls-handshake"  #: the TLS handshake failed
    AUTH = "auth"  #: authentication failed or was not possible
    PROTOCOL = "protocol"  #: the server broke the protocol; nothing it said decides
    TIMEOUT = "timeout"  #: a stage's deadline passed
    LOST = "lost"  #: the connection was lost
    CONTENT = "content"  #: the message's own content could not be sent (unreadable, changed)
    LOCAL = "local"  #: refused before sending (too large, an extension the server lacks)


@dataclass
class TLSInfo:
    """What a TLS session turned out to be; filled in when the handshake completes."""

    version: str | None = None
    cipher: str | None = None
    verified: bool = False
    problem: str | None = None  #: why it is not verified

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "cipher": self.cipher, "verified": self.verified}


@fast_init
@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient's outcome, where it was decided, and how."""

    recipient: str
    status: Status
    reply: Reply
    mx: str | None = None
    address: str | None = None
    tls: TLSInfo | None = None
    outcome_unknown: bool = False
    attempts: int = 0
    seconds: float = 0.0  #: from the start of its destination's delivery until it was decided
    failure: FailureKind | None = None  #: None when delivered
    #: Delivered to a server without DSN: NOTIFY and ORCPT went no further, so any
    #: success notice is ours to send ("relayed", RFC 3461 6.2.2.1).
    dsn_relayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return report_to_json(self)


@fast_init
@dataclass(frozen=True, slots=True)
class MessageReport:
    message: Message
    recipients: tuple[RecipientReport, ...]


def report_to_json(report: RecipientReport) -> dict[str, Any]:
    """The JSON object for one recipient's report (see :func:`report_from_json`)."""
    reply, tls = report.reply, report.tls
    return {
        "recipient": report.recipient,
        "status": report.status.value,
        "code": reply.code,
        "enhanced": str(reply.enhanced) if reply.enhanced else None,
        "reply": " ".join(line for line in reply.lines if line),
        "lines": list(reply.lines),
        "local": reply.local,
        "failure": report.failure.value if report.failure else None,
        "mx": report.mx,
        "address": report.address,
        "tls": None if tls is None else {**tls.as_json(), "problem": tls.problem},
        "outcome_unknown": report.outcome_unknown,
        "attempts": report.attempts,
        "seconds": round(report.seconds, 3),
        "dsn_relayed": report.dsn_relayed,
    }


def report_from_json(data: Mapping[str, Any]) -> RecipientReport:
    """A report read back from :func:`report_to_json`'s form; raises ValueError (or KeyError,
    TypeError) for a document that is not one."""
    lines = tuple(str(line) for line in data["lines"])
    enhanced = EnhancedStatus.parse(data["enhanced"]) if data.get("enhanced") else None
    reply = Reply(int(data["code"]), lines, enhanced, bool(data.get("local", False)))
    tls_data = data.get("tls")
    tls = None
    if tls_data is not None:
        tls = TLSInfo(
            tls_data.get("version"),
            tls_data.get("cipher"),
            bool(tls_data.get("verified", False)),
            tls_data.get("problem"),
        )
    failure = data.get("failure")
    return RecipientReport(
        str(data["recipient"]),
        Status(data["status"]),
        reply,
        data.get("mx"),
        data.get("address"),
        tls,
        bool(data.get("outcome_unknown", False)),
        int(data.get("attempts", 0)),
        float(data.get("seconds", 0.0)),
        FailureKind(failure) if failure else None,
        bool(data.get("dsn_relayed", False)),
    )


def printable(text: str) -> str:
    """``text`` for a log line or a terminal: control characters shown as ``?``, so that a
    server's reply cannot forge a line or move the cursor."""
    if text.isprintable():
        return text  # the common case, in one C-level pass
    return "".join(c if c.isprintable() else "?" for c in text)
