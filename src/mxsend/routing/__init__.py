"""Routing: which hosts to try for a domain, in which order, under which TLS policy.

The decisions are pure functions (``order_mx``, ``interleave``); the lookups are a thin async
layer on an injected twisted.names resolver (``DNSRouter``).
"""

from mxsend.routing._dns import MAX_CNAME_CHAIN, DNSRouter, make_resolver
from mxsend.routing._mx import (
    MAX_ADDRESSES,
    MAX_SESSIONS,
    MXHost,
    RouteError,
    TLSPolicy,
    interleave,
    order_mx,
)

__all__ = [
    "MAX_ADDRESSES",
    "MAX_CNAME_CHAIN",
    "MAX_SESSIONS",
    "DNSRouter",
    "MXHost",
    "RouteError",
    "TLSPolicy",
    "interleave",
    "make_resolver",
    "order_mx",
]
