"""TLS for SMTP sessions: one connection creator for every policy (RFC 3207, RFC 8314).

Under ``verify`` the chain must lead to a trusted root and the certificate must name the MX
host (never its IP); otherwise the handshake is aborted. Under ``may`` and ``encrypt`` the same
checks run and their result is recorded, but a failure does not stop the session.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from mxsend.model import TLSInfo

__all__ = ["ClientTLS", "TLSInfo"]


class _NotVerified(Exception):
    """The certificate did not verify under the ``verify`` policy."""


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """Creates client TLS connections for ``hostname``; ``require_verified`` aborts the
    handshake when the certificate cannot be verified for that name."""

    def __init__(self, hostname: str, *, require_verified: bool, cafile: str | None = None):
        self.hostname = hostname.rstrip(".")
        try:
            ipaddress.ip_address(self.hostname)
            self._is_ip = True
        except ValueError:
            self._is_ip = False
        self.info = TLSInfo()
        self._require = require_verified
        self._chain_ok = True
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_default_verify_paths()
        if cafile is not None:
            context.load_verify_locations(cafile)
        context.set_verify(SSL.VERIFY_PEER, self._verify)
        context.set_info_callback(self._info)
        self._context = context

    def _verify(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        if not ok:
            self._chain_ok = False
            self.info.problem = (
                f"certificate chain not trusted (X509 error {errno} at depth {depth})"
            )
        return bool(ok) or not self._require

    def _info(self, conn: SSL.Connection, where: int, ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        self.info.version = conn.get_protocol_version_name()
        self.info.cipher = conn.get_cipher_name()
        name_ok = True
        try:
            if self._is_ip:
                verify_ip_address(conn, self.hostname)  # a smarthost given as an address
            else:
                verify_hostname(conn, self.hostname)
        except (VerificationError, CertificateError) as exc:
            name_ok = False
            self.info.problem = (
                self.info.problem or f"certificate does not match {self.hostname}: {exc}"
            )
        self.info.verified = self._chain_ok and name_ok
        if self._require and not self.info.verified:
            transport = conn.get_app_data()
            failure = Failure(_NotVerified(self.info.problem or "not verified"))  # type: ignore[no-untyped-call]
            transport.failVerification(failure)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if not self._is_ip:  # SNI carries names only (RFC 6066 3)
            connection.set_tlsext_host_name(self.hostname.encode("ascii"))
        connection.set_connect_state()
        return connection
