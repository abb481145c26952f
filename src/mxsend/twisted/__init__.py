"""The Twisted shell: connections, TLS, deadlines and delivery orchestration."""

from mxsend.twisted._deliver import (
    Deliverer,
    DeliveryOptions,
    MessageReport,
    RecipientReport,
    Smarthost,
    deliver,
)
from mxsend.twisted._protocol import SessionOutcome, SMTPClientProtocol, Timeouts
from mxsend.twisted._tls import ClientTLS, TLSInfo

__all__ = [
    "ClientTLS",
    "Deliverer",
    "DeliveryOptions",
    "MessageReport",
    "RecipientReport",
    "SMTPClientProtocol",
    "SessionOutcome",
    "Smarthost",
    "TLSInfo",
    "Timeouts",
    "deliver",
]
