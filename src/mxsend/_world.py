"""An embedded local mail world on loopback: a DNS authority and scripted SMTP servers.

Used by ``mxsend demo`` and by the tests. Everything listens on 127.0.0.x high ports and
stops with :meth:`LocalWorld.stop`.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.names import authority, common, dns, server
from zope.interface import implementer

from mxsend._testca import Issued, TestCA
from mxsend.testing import DEFAULT_EXTENSIONS, FakeServer

__all__ = ["LocalWorld", "MailHost", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (loopback only)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class _Zone(authority.FileAuthority):
    """An authority for one zone, from records in memory."""

    def __init__(self, origin: str, records: Mapping[str, list[Any]]) -> None:
        common.ResolverBase.__init__(self)
        self._cache: dict[Any, Any] = {}
        soa = dns.Record_SOA(
            mname=f"ns.{origin}", rname=f"hostmaster.{origin}", serial=1,
            refresh=60, retry=60, expire=60, minimum=60, ttl=60,
        )  # fmt: skip
        table: dict[bytes, list[Any]] = {origin.encode(): [soa]}
        for name, found in records.items():
            table.setdefault(name.lower().encode(), []).extend(found)
        self.soa = (origin.encode(), soa)  # type: ignore[assignment]
        self.records = table  # type: ignore[assignment]


@dataclass
class MailHost:
    """A scripted SMTP server: its name, address, recipient replies, STARTTLS or not."""

    name: str
    address: str
    replies: dict[str, str] = field(default_factory=dict)
    starttls: bool = False
    server: FakeServer | None = None


@implementer(IOpenSSLServerConnectionCreator)
class _ServerTLS:
    """Server TLS from a certificate and key (cryptography objects, as pyOpenSSL prefers)."""

    def __init__(self, issued: Issued) -> None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate(x509.load_pem_x509_certificate(issued.cert_pem))
        key = serialization.load_pem_private_key(issued.key_pem, None)
        context.use_privatekey(key)  # type: ignore[arg-type]
        self._context = context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


class _SMTPServerProtocol(Protocol):
    def __init__(self, host: MailHost, tls: _ServerTLS | None) -> None:
        extensions = DEFAULT_EXTENSIONS + (("STARTTLS",) if host.starttls else ())
        self._server = FakeServer(hostname=host.name, extensions=extensions, replies=host.replies)
        host.server = self._server
        self._tls = tls
        self._secure = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._server.greeting())

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self._server.receive(data))
        if self._server.tls_requested and not self._secure and self._tls is not None:
            self._secure = True
            self._server.extensions = DEFAULT_EXTENSIONS  # STARTTLS is not offered twice
            self.transport.startTLS(self._tls)  # type: ignore[attr-defined]
        if self._server.closed:
            self.transport.loseConnection()


class _SMTPFactory(Factory):
    def __init__(self, host: MailHost, tls: _ServerTLS | None) -> None:
        self._host = host
        self._tls = tls

    def buildProtocol(self, addr: Any) -> _SMTPServerProtocol:
        protocol = _SMTPServerProtocol(self._host, self._tls)
        protocol.factory = self
        return protocol


class LocalWorld:
    """Starts a DNS authority for ``zone`` (e.g. "test") and the given mail hosts.

    ``mx`` maps a domain to its MX records: (preference, host name), with ``(0, ".")`` for a
    null MX. ``a`` maps host names to IPv4 addresses. A host name with an address but no server
    is a host that is down.
    """

    def __init__(
        self,
        reactor: Any,
        zone: str,
        mx: Mapping[str, list[tuple[int, str]]],
        a: Mapping[str, str],
        hosts: list[MailHost],
    ) -> None:
        self._reactor = reactor
        self.ca = TestCA()
        self.hosts = hosts
        self.mx_port = free_port("127.0.0.1")
        self.dns_port = free_port("127.0.0.1")
        records: dict[str, list[Any]] = {}
        for domain, exchangers in mx.items():
            records.setdefault(domain, []).extend(
                dns.Record_MX(preference, name if name != "." else "", ttl=60)
                for preference, name in exchangers
            )
        for name, address in a.items():
            records.setdefault(name, []).append(dns.Record_A(address, ttl=60))
        self._zone = _Zone(zone, records)
        self._ports: list[IListeningPort] = []
        fd, self.cafile = tempfile.mkstemp(prefix="mxsend-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as out:
            out.write(self.ca.cert_pem)

    def start(self) -> None:
        resolver = server.DNSServerFactory(authorities=[self._zone])
        udp = dns.DNSDatagramProtocol(resolver)
        self._ports.append(self._reactor.listenUDP(self.dns_port, udp, interface="127.0.0.1"))
        self._ports.append(self._reactor.listenTCP(self.dns_port, resolver, interface="127.0.0.1"))
        for host in self.hosts:
            tls = None
            if host.starttls:
                tls = _ServerTLS(self.ca.issue(host.name))
            factory = _SMTPFactory(host, tls)
            self._ports.append(
                self._reactor.listenTCP(self.mx_port, factory, interface=host.address)
            )

    def stop(self) -> Any:
        """Stop listening; returns a Deferred."""
        if os.path.exists(self.cafile):
            os.unlink(self.cafile)
        return gatherResults([maybeDeferred(port.stopListening) for port in self._ports])

    @property
    def dns(self) -> tuple[str, int]:
        return ("127.0.0.1", self.dns_port)
