"""The Twisted shell: connections, TLS, deadlines and delivery orchestration.

The only room that does I/O. It reads routes from ``mxsend.routing``, drives the sans-I/O core
``mxsend.protocol`` and returns ``mxsend.model`` reports; nothing below it imports it. The
report types are re-exported here for the callers that found them here first."""

from mxsend.model import MessageReport, RecipientReport, TLSInfo
from mxsend.twisted._deliver import Deliverer, DeliveryOptions, Smarthost, deliver
from mxsend.twisted._protocol import SessionOutcome, SMTPClientProtocol
from mxsend.twisted._timeouts import STAGES, Timeouts
from mxsend.twisted._tls import ClientTLS

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
