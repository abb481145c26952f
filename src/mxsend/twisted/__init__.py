"""The Twisted shell: connections, TLS, deadlines and delivery orchestration."""

from mxsend.twisted._deliver import (
    Deliverer,
    DeliveryOptions,
    MessageReport,
    RecipientReport,
    Smarthost,
    deliver,
)
from mxsend.twisted._protocol import SessionOutcome, SMTPClientProtocol
from mxsend.twisted._timeouts import STAGES, Timeouts
from mxsend.twisted._tls import ClientTLS, TLSInfo

__all__ = [
    "STAGES",
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
