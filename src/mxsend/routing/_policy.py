"""What a destination's route carries besides its hosts: the TLS policy, and where it came from.

A route is decided per destination, so per-domain policy (a config file's routes, MTA-STS,
DANE) changes the route, never a global setting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxsend.routing._mx import MXHost

__all__ = ["PolicySource", "Route", "TLSPolicy"]


class TLSPolicy(enum.Enum):
    """How a destination's channel must be protected (RFC 3207, RFC 7435, RFC 8314)."""

    NONE = "none"  #: never STARTTLS
    MAY = "may"  #: STARTTLS when offered; verify and record; cleartext if TLS fails
    ENCRYPT = "encrypt"  #: TLS required, certificate not checked
    VERIFY = "verify"  #: TLS required, certificate valid for the MX host name

    @property
    def required(self) -> bool:
        return self in (TLSPolicy.ENCRYPT, TLSPolicy.VERIFY)


class PolicySource(enum.Enum):
    """Where a route's TLS policy came from, for reports and for precedence."""

    DEFAULT = "default"  #: may for MX hosts, verify for a smarthost
    OPTION = "option"  #: given by the caller (``--tls``, DeliveryOptions.tls)
    CONFIG = "config"  #: a route in the configuration file
    MTA_STS = "mta-sts"  #: the domain's MTA-STS policy (RFC 8461)
    DANE = "dane"  #: the MX hosts' TLSA records (RFC 7672)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a destination's mail goes and how: the hosts in the order to try them, the port,
    the TLS policy and its source. ``destination`` is the recipient domain, or "" when every
    recipient goes through one smarthost; ``implicit_tls`` means TLS from the first byte."""

    destination: str
    hosts: tuple[MXHost, ...]
    port: int
    tls: TLSPolicy
    source: PolicySource = PolicySource.DEFAULT
    implicit_tls: bool = False
