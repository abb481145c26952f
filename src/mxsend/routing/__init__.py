"""Routing: which hosts to try for a domain, in which order, under which TLS policy.

The decisions are pure functions (``order_mx``, ``interleave``) and values (``Route``,
``TLSPolicy``); the lookups are a thin async layer on an injected twisted.names resolver
(``DNSRouter``). It imports the core's value types and twisted.names, never the Twisted
shell, the CLI or a queue.
"""

from mxsend.routing._dns import MAX_CNAME_CHAIN, DNSRouter, make_resolver
from mxsend.routing._mx import (
    MAX_ADDRESSES,
    MAX_SESSIONS,
    MXHost,
    RouteError,
    interleave,
    order_mx,
)
from mxsend.routing._policy import PolicySource, Route, TLSPolicy

__all__ = [
    "MAX_ADDRESSES",
    "MAX_CNAME_CHAIN",
    "MAX_SESSIONS",
    "DNSRouter",
    "MXHost",
    "PolicySource",
    "Route",
    "RouteError",
    "TLSPolicy",
    "interleave",
    "make_resolver",
    "order_mx",
]
