"""Events the connection reports, and the per-transaction and per-recipient results."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxsend.protocol._address import Address
from mxsend.protocol._capabilities import Capabilities
from mxsend.protocol._options import Envelope
from mxsend.protocol._reply import Reply
from mxsend.protocol._values import fast_init

__all__ = [
    "Authenticated",
    "AuthenticationFailed",
    "BodyRequested",
    "BodySent",
    "Closed",
    "Event",
    "Greeted",
    "Ready",
    "RecipientResult",
    "ServerClosing",
    "SessionRefused",
    "Status",
    "TLSRefused",
    "TLSRequested",
    "TransactionCompleted",
    "TransactionResult",
]


class Status(enum.Enum):
    """A recipient's outcome. DEFERRED is worth retrying; FAILED is final."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"

    @classmethod
    def of(cls, reply: Reply) -> Status:
        code = reply.code  # once per recipient: no properties, no member lookups
        if 200 <= code < 300:
            return DELIVERED
        return FAILED if code >= 500 else DEFERRED


# Looked up once: on Python 3.11 ``Status.DELIVERED`` goes through EnumType.__getattr__'s hook.
DELIVERED, DEFERRED, FAILED = Status.DELIVERED, Status.DEFERRED, Status.FAILED


@fast_init
@dataclass(frozen=True, slots=True)
class RecipientResult:
    """One recipient's outcome and the reply that decided it. ``outcome_unknown`` is set when
    the connection was lost after the end of data and before its reply (RFC 1047): the
    message may have been delivered; a retry may duplicate it."""

    recipient: Address
    status: Status
    reply: Reply
    outcome_unknown: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The outcome of one MAIL transaction. ``dropped`` lists the parameters not sent
    because the server lacks the extension and the caller only preferred them."""

    transaction_id: int
    envelope: Envelope
    recipients: tuple[RecipientResult, ...]
    mail_reply: Reply | None
    final_reply: Reply | None
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Greeted:
    reply: Reply


@dataclass(frozen=True, slots=True)
class SessionRefused:
    """The greeting or EHLO/HELO was refused; QUIT has been sent."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Ready:
    """EHLO (or HELO) succeeded; transactions, STARTTLS and AUTH may start."""

    capabilities: Capabilities
    reply: Reply
    encrypted: bool


@dataclass(frozen=True, slots=True)
class TLSRequested:
    """The server accepted STARTTLS: start TLS now, then call ``tls_established()``."""


@dataclass(frozen=True, slots=True)
class TLSRefused:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Authenticated:
    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    reply: Reply


@fast_init
@dataclass(frozen=True, slots=True)
class BodyRequested:
    """Send the transaction's content with ``send_body()`` and ``end_body()``."""

    transaction_id: int


@fast_init
@dataclass(frozen=True, slots=True)
class BodySent:
    """The content given to ``begin_transaction()`` and the end of data are written: the
    session may begin the next transaction (it is pipelined behind them)."""

    transaction_id: int


@fast_init
@dataclass(frozen=True, slots=True)
class TransactionCompleted:
    result: TransactionResult


@dataclass(frozen=True, slots=True)
class ServerClosing:
    """421: the server is closing the channel (RFC 5321 3.8). Close the connection."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (QUIT answered, or the connection was lost)."""


Event = (
    Greeted
    | SessionRefused
    | Ready
    | TLSRequested
    | TLSRefused
    | Authenticated
    | AuthenticationFailed
    | BodyRequested
    | BodySent
    | TransactionCompleted
    | ServerClosing
    | Closed
)
