"""Routing: which hosts to try for a domain, in which order, under which TLS policy.

Pure decisions and values: ``order_mx`` and ``interleave`` order what DNS answered, a ``Route``
carries a destination's hosts, port and TLS policy with where that policy came from. The DNS
lookups themselves are I/O and live in the Twisted shell (``mxsend.twisted.DNSRouter``). It
imports only the core's value types: no Twisted, no shell, no CLI, no queue.
"""

import importlib
import warnings

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
    "MAX_SESSIONS",
    "MXHost",
    "PolicySource",
    "Route",
    "RouteError",
    "TLSPolicy",
    "interleave",
    "order_mx",
]

# DNS lookups moved to the Twisted shell; their old names here keep working for one release,
# imported only when asked for so that importing routing never pulls in Twisted.
_MOVED = {"DNSRouter", "make_resolver", "MAX_CNAME_CHAIN"}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        warnings.warn(
            f"mxsend.routing.{name} moved to mxsend.twisted.{name}", DeprecationWarning, 2
        )
        return getattr(importlib.import_module("mxsend.twisted"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
