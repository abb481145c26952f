"""STARTTLS response injection, stripping and downgrades (RFC 3207 5; docs/security.md,
STARTTLS response injection and STARTTLS stripping and downgrade)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend._testca import TestCA
from mxsend.protocol import Status
from mxsend.routing import TLSPolicy
from tests.conftest import temp_dir
from tests.integration.deliver import deliver_to
from tests.integration.hostile import HostileProtocol, HostileServer, ordinary, serving

CA = TestCA()
CAFILE_PEM = CA.cert_pem


def with_starttls(on_starttls: bytes | None, *, start: bool = True) -> Any:
    def respond(line: bytes, proto: HostileProtocol) -> None:
        if line.upper().startswith(b"EHLO"):
            proto.write(b"250-evil.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        elif line.upper() == b"STARTTLS" and on_starttls is not None:
            proto.write(on_starttls)
            if start:
                proto.start_tls()
            else:
                proto.transport.loseConnection()  # type: ignore[union-attr]
        else:
            ordinary(line, proto)

    return respond


class StartTLSAttacks(TestCase):
    timeout = 60

    def server(
        self, respond: Any, *, name: str = "127.0.0.1", expired: bool = False
    ) -> HostileServer:
        issued = (TestCA() if name == "self-signed" else CA).issue(
            "127.0.0.1" if name == "self-signed" else name, expired=expired
        )
        return serving(self, HostileServer(respond, certificate=issued))

    def cafile(self) -> str:
        path = temp_dir(self) / "ca.pem"
        path.write_bytes(CAFILE_PEM)
        return str(path)

    def run_case(self, job: Coroutine[Any, Any, None]) -> Deferred[None]:
        return Deferred.fromCoroutine(job)

    async def _injection(self, injected: bytes) -> None:
        server = self.server(with_starttls(b"220 go\r\n" + injected))
        [report] = await deliver_to(server.port, tls=TLSPolicy.VERIFY, cafile=self.cafile())
        assert report.status is Status.DEFERRED, report
        # Nothing after STARTTLS reached the server: no EHLO, no AUTH, no MAIL.
        assert server.received[-1] == b"STARTTLS", server.received
        assert server.messages == 0

    def test_injection_complete_lines(self) -> Deferred[None]:
        return self.run_case(self._injection(b"250-x\r\n250 AUTH PLAIN\r\n"))

    def test_injection_without_final_crlf(self) -> Deferred[None]:
        return self.run_case(self._injection(b"250-x\r\n250 AUTH PLAIN"))

    async def _downgrade(self, respond: Any, **server: Any) -> None:
        hostile = self.server(respond, **server)
        [report] = await deliver_to(hostile.port, tls=TLSPolicy.VERIFY, cafile=self.cafile())
        assert report.status is Status.DEFERRED, report
        assert not any(line.upper().startswith(b"MAIL") for line in hostile.received)
        assert hostile.messages == 0

    def test_starttls_not_offered(self) -> Deferred[None]:
        return self.run_case(self._downgrade(ordinary))

    def test_starttls_454(self) -> Deferred[None]:
        return self.run_case(
            self._downgrade(with_starttls(b"454 4.7.0 TLS not available\r\n", start=False))
        )

    def test_starttls_502(self) -> Deferred[None]:
        return self.run_case(self._downgrade(with_starttls(b"502 5.5.1 no\r\n", start=False)))

    def test_starttls_421(self) -> Deferred[None]:
        return self.run_case(self._downgrade(with_starttls(b"421 4.3.2 bye\r\n", start=False)))

    def test_220_then_no_handshake(self) -> Deferred[None]:
        return self.run_case(self._downgrade(with_starttls(b"220 go\r\n", start=False)))

    def test_certificate_for_wrong_name(self) -> Deferred[None]:
        return self.run_case(self._downgrade(with_starttls(b"220 go\r\n"), name="other.test"))

    def test_expired_certificate(self) -> Deferred[None]:
        return self.run_case(self._downgrade(with_starttls(b"220 go\r\n"), expired=True))

    def test_self_signed_certificate(self) -> Deferred[None]:
        return self.run_case(self._downgrade(with_starttls(b"220 go\r\n"), name="self-signed"))

    async def _verified(self) -> None:
        server = self.server(with_starttls(b"220 go\r\n"))
        [report] = await deliver_to(server.port, tls=TLSPolicy.VERIFY, cafile=self.cafile())
        assert report.status is Status.DELIVERED and report.tls is not None
        assert report.tls.verified and server.messages == 1

    def test_good_certificate_delivers(self) -> Deferred[None]:
        return self.run_case(self._verified())

    async def _may_falls_back(self) -> None:
        server = self.server(with_starttls(b"220 go\r\n", start=False))
        [report] = await deliver_to(server.port, tls=TLSPolicy.MAY, cafile=self.cafile())
        # Opportunistic: the handshake failed, so the same host again, in cleartext.
        assert report.status is Status.DELIVERED and report.tls is None, report
        assert server.messages == 1

    def test_may_policy_retries_in_cleartext_after_failed_handshake(self) -> Deferred[None]:
        return self.run_case(self._may_falls_back())


class OtherPolicies(TestCase):
    timeout = 60

    async def _encrypt_accepts_unverified(self) -> None:
        server = serving(
            self, HostileServer(with_starttls(b"220 go\r\n"), certificate=TestCA().issue("x.test"))
        )
        [report] = await deliver_to(server.port, tls=TLSPolicy.ENCRYPT)
        assert report.status is Status.DELIVERED and report.tls is not None
        assert not report.tls.verified and server.messages == 1

    def test_encrypt_policy_needs_tls_not_verification(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._encrypt_accepts_unverified())

    async def _encrypt_without_starttls(self) -> None:
        server = serving(self, HostileServer(ordinary))
        [report] = await deliver_to(server.port, tls=TLSPolicy.ENCRYPT)
        assert report.status is Status.DEFERRED and server.messages == 0

    def test_encrypt_policy_without_starttls_defers(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._encrypt_without_starttls())

    async def _implicit_tls(self) -> None:
        server = serving(
            self, HostileServer(ordinary, certificate=CA.issue("127.0.0.1")), implicit_tls=True
        )
        cafile = temp_dir(self) / "ca.pem"
        cafile.write_bytes(CAFILE_PEM)
        [report] = await deliver_to(
            server.port, tls=TLSPolicy.VERIFY, cafile=str(cafile), implicit_tls=True, auth=False
        )
        assert report.status is Status.DELIVERED, report
        assert report.tls is not None and report.tls.verified
        assert not any(line.upper() == b"STARTTLS" for line in server.received)

    def test_implicit_tls_smarthost(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._implicit_tls())
