"""No AUTH line ever crosses a cleartext channel (RFC 4954 4; docs/security.md, credentials
before TLS)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend.protocol import Status
from mxsend.routing import TLSPolicy
from tests.integration.deliver import deliver_to
from tests.integration.hostile import HostileProtocol, HostileServer, ordinary, serving


def offers_auth(line: bytes, proto: HostileProtocol) -> None:
    if line.upper().startswith(b"EHLO"):
        proto.write(b"250-evil.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n")
    elif line.upper().startswith(b"AUTH"):
        proto.write(b"235 2.7.0 thanks for the password\r\n")
    else:
        ordinary(line, proto)


class CleartextAuth(TestCase):
    timeout = 30

    async def _no_auth_line(self) -> None:
        server = serving(self, HostileServer(offers_auth))
        [report] = await deliver_to(server.port, tls=TLSPolicy.MAY, auth=True)
        assert report.status is Status.DEFERRED
        assert "unencrypted" in report.reply.text
        assert not any(line.upper().startswith(b"AUTH") for line in server.received)
        assert not any(b"secret" in line for line in server.received)
        assert server.messages == 0

    def test_auth_offered_without_tls_is_never_used(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._no_auth_line())

    async def _explicitly_allowed(self) -> None:
        server = serving(self, HostileServer(offers_auth))
        [report] = await deliver_to(
            server.port, tls=TLSPolicy.NONE, auth=True, allow_cleartext_auth=True
        )
        assert report.status is Status.DELIVERED
        assert any(line.startswith(b"AUTH PLAIN") for line in server.received)

    def test_cleartext_auth_only_when_explicitly_allowed(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._explicitly_allowed())
