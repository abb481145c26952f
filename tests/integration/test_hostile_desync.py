"""A reply sent ahead of its command, over real sockets, never shifts the replies after it: the
session aborts and the recipient stays deferred (retryable, never a false delivery or bounce).
RFC 2920 3.1; docs/security.md, desynchronisation by unsolicited replies."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend._testca import TestCA
from mxsend.protocol import Status
from mxsend.routing import TLSPolicy
from mxsend.twisted import RecipientReport
from tests.conftest import temp_dir
from tests.integration.deliver import deliver_to
from tests.integration.hostile import (
    EHLO,
    HostileProtocol,
    HostileServer,
    Responder,
    ordinary,
    serving,
)

CA = TestCA()
GREETING = b"220 evil.test ESMTP\r\n"
# What a man in the middle would forge: an EHLO reply that drops STARTTLS.
FORGED_EHLO = b"250-evil.test\r\n250 8BITMIME\r\n"


def offers_starttls(*, after_tls_ehlo: bytes = b"") -> Responder:
    """A server offering STARTTLS; ``after_tls_ehlo`` rides along its post-TLS EHLO reply."""

    def respond(line: bytes, proto: HostileProtocol) -> None:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO" and proto.tls:
            proto.write(EHLO + after_tls_ehlo)  # one write: one read for the client
        elif verb == b"EHLO":
            proto.write(b"250-evil.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        elif verb == b"STARTTLS":
            proto.write(b"220 2.0.0 go ahead\r\n")
            proto.start_tls()
        else:
            ordinary(line, proto)

    return respond


class Desynchronisation(TestCase):
    timeout = 60

    def server(self, respond: Responder, greeting: bytes = GREETING) -> HostileServer:
        issued = CA.issue("127.0.0.1")
        return serving(self, HostileServer(respond, greeting=greeting, certificate=issued))

    def cafile(self) -> str:
        path = temp_dir(self) / "ca.pem"
        path.write_bytes(CA.cert_pem)
        return str(path)

    def run_case(self, job: Coroutine[Any, Any, None]) -> Deferred[None]:
        return Deferred.fromCoroutine(job)

    async def deliver(self, server: HostileServer, policy: TLSPolicy) -> RecipientReport:
        [report] = await deliver_to(server.port, tls=policy, cafile=self.cafile())
        return report

    def assert_deferred_without_mail(self, report: RecipientReport, server: HostileServer) -> None:
        assert report.status is Status.DEFERRED, report
        assert not any(line.upper().startswith(b"MAIL") for line in server.received), server
        assert server.messages == 0
        assert "no command outstanding" in report.reply.text, report.reply

    async def _honest_server_delivers_over_tls(self) -> None:
        server = self.server(offers_starttls())
        report = await self.deliver(server, TLSPolicy.MAY)
        assert report.status is Status.DELIVERED and report.tls is not None, report
        assert server.messages == 1

    def test_honest_server_delivers_over_tls(self) -> Deferred[None]:
        # The control: this server, without the forged replies, is used over TLS.
        return self.run_case(self._honest_server_delivers_over_tls())

    async def _forged_ehlo_with_greeting(self) -> None:
        server = self.server(offers_starttls(), greeting=GREETING + FORGED_EHLO)
        report = await self.deliver(server, TLSPolicy.MAY)
        # Taken as the EHLO reply, the forgery would have the client skip STARTTLS and send
        # MAIL in cleartext; it answers no command, so the client aborts before sending EHLO.
        self.assert_deferred_without_mail(report, server)
        assert server.received == [], server.received

    def test_forged_ehlo_reply_in_greeting_write_never_downgrades(self) -> Deferred[None]:
        return self.run_case(self._forged_ehlo_with_greeting())

    async def _extra_reply_after_tls_ehlo(self, policy: TLSPolicy) -> None:
        server = self.server(offers_starttls(after_tls_ehlo=b"250 ok\r\n"))
        report = await self.deliver(server, policy)
        # The extra 250 would answer MAIL before it was sent, and every later reply would
        # answer the command before its own: a refused RCPT could read as accepted.
        self.assert_deferred_without_mail(report, server)
        assert not report.outcome_unknown
        assert server.received[-2:] == [b"STARTTLS", b"EHLO client.test"], server.received

    def test_extra_reply_after_tls_ehlo_may(self) -> Deferred[None]:
        # MAY must not count the abort as a failed handshake and retry in cleartext.
        return self.run_case(self._extra_reply_after_tls_ehlo(TLSPolicy.MAY))

    def test_extra_reply_after_tls_ehlo_verify(self) -> Deferred[None]:
        return self.run_case(self._extra_reply_after_tls_ehlo(TLSPolicy.VERIFY))
