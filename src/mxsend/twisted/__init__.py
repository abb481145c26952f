"""The Twisted shell: connections, TLS, deadlines and delivery orchestration.

The only room that does I/O. It reads routes from ``mxsend.routing``, drives the sans-I/O core
``mxsend.protocol`` and returns ``mxsend.model`` reports; nothing below it imports it. The
report and option types are re-exported here for the callers that found them here first."""

from mxsend.model import MessageReport, RecipientReport, TLSInfo
from mxsend.options import STAGES, DeliveryOptions, Limits, Smarthost, Timeouts, TLSOptions
from mxsend.twisted._daemon import QueueDaemon
from mxsend.twisted._deliver import Deliverer, deliver
from mxsend.twisted._dns import MAX_CNAME_CHAIN, DNSRouter, make_resolver
from mxsend.twisted._protocol import SessionOutcome, SMTPClientProtocol
from mxsend.twisted._runner import PassCounts, QueueRunner
from mxsend.twisted._tls import ClientTLS

__all__ = [
    "MAX_CNAME_CHAIN",
    "STAGES",
    "ClientTLS",
    "DNSRouter",
    "Deliverer",
    "DeliveryOptions",
    "Limits",
    "MessageReport",
    "PassCounts",
    "QueueDaemon",
    "QueueRunner",
    "RecipientReport",
    "SMTPClientProtocol",
    "SessionOutcome",
    "Smarthost",
    "TLSInfo",
    "TLSOptions",
    "Timeouts",
    "deliver",
    "make_resolver",
]
