"""Ambiguous outcomes (RFC 1047, RFC 5321 3.8) over real sockets: a connection lost after the
end of data left is "outcome unknown" and no other MX host gets the message (it may have been
delivered: a second copy is the worse error); lost before it, the next host is tried."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend.model import FailureKind, RecipientReport
from mxsend.protocol import Envelope, Message, Status
from mxsend.routing import TLSPolicy
from mxsend.testing import FakeResolver
from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, TLSOptions
from tests.integration.hostile import HostileProtocol, HostileServer, ordinary


def close_after_dot(line: bytes, proto: HostileProtocol) -> None:
    """Takes the whole message, then drops the connection instead of answering the dot."""
    if proto.in_data and line == b".":
        assert proto.transport is not None
        proto.transport.abortConnection()  # type: ignore[attr-defined]
        return
    ordinary(line, proto)


def close_at_data(line: bytes, proto: HostileProtocol) -> None:
    """Drops the connection when DATA comes: nothing of the content went out."""
    if line.upper() == b"DATA":
        assert proto.transport is not None
        proto.transport.abortConnection()  # type: ignore[attr-defined]
        return
    ordinary(line, proto)


class LostAtTheFirstMX(TestCase):
    def two_hosts(self, first: HostileServer) -> HostileServer:
        first.start()
        second = HostileServer()
        second.start(interface="127.0.0.2", port=first.port)
        self.addCleanup(first.stop)
        self.addCleanup(second.stop)
        return second

    async def deliver(self, port: int) -> RecipientReport:
        resolver = FakeResolver(
            mx={"example.net": [(10, "mx1.example.net"), (20, "mx2.example.net")]},
            a={"mx1.example.net": ["127.0.0.1"], "mx2.example.net": ["127.0.0.2"]},
        )
        options = DeliveryOptions("client.test", mx_port=port, tls=TLSOptions(TLSPolicy.NONE))
        deliverer = Deliverer(reactor, DNSRouter(resolver, reactor), options)
        message = Message(Envelope.build("a@example.com", ["b@example.net"]), b"hi\n")
        [report] = await deliverer.deliver([message])
        [recipient] = report.recipients
        return recipient

    async def _after_the_dot(self) -> None:
        first = HostileServer(respond=close_after_dot)
        second = self.two_hosts(first)
        report = await self.deliver(first.port)
        assert report.status is Status.DEFERRED and report.outcome_unknown, report
        assert report.failure is FailureKind.LOST and report.mx == "mx1.example.net"
        assert second.received == [] and second.messages == 0  # never offered again

    def test_lost_after_the_dot_is_unknown_and_not_sent_again(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._after_the_dot())

    async def _before_the_dot(self) -> None:
        first = HostileServer(respond=close_at_data)
        second = self.two_hosts(first)
        report = await self.deliver(first.port)
        assert report.status is Status.DELIVERED and not report.outcome_unknown, report
        assert report.mx == "mx2.example.net" and second.messages == 1

    def test_lost_before_the_dot_goes_to_the_next_host(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._before_the_dot())


class ImplicitTLSToACleartextServer(TestCase):
    async def _attempt(self) -> None:
        from tests.integration.deliver import deliver_to

        server = HostileServer()
        server.start()
        self.addCleanup(server.stop)
        [report] = await deliver_to(server.port, tls=TLSPolicy.MAY, implicit_tls=True)
        assert report.status is Status.DEFERRED, report
        assert report.failure is FailureKind.TLS_HANDSHAKE, report
        assert not any(line.startswith(b"MAIL") for line in server.received)

    def test_the_failed_handshake_is_named_and_not_retried_in_cleartext(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._attempt())


def refuse_then_close(line: bytes, proto: HostileProtocol) -> None:
    """Refuses the first recipient, then answers the second RCPT with 421 and hangs up."""
    if line.upper().startswith(b"RCPT"):
        proto.server.messages += 1  # counts RCPTs here
        if proto.server.messages == 1:
            proto.write(b"550 5.1.1 no such user\r\n")
            return
        proto.write(b"421 4.3.2 shutting down\r\n")
        assert proto.transport is not None
        proto.transport.loseConnection()
        return
    ordinary(line, proto)


class EachRecipientsFailureIsNamed(TestCase):
    """Reports are made as each transaction's result comes in: the kind of failure of a
    recipient refused before a 421 and of one the 421 left deferred are told apart."""

    async def _deliver(self) -> None:
        server = HostileServer(respond=refuse_then_close)
        server.start()
        self.addCleanup(server.stop)
        resolver = FakeResolver(
            mx={"example.net": [(10, "mx1.example.net")]}, a={"mx1.example.net": ["127.0.0.1"]}
        )
        options = DeliveryOptions(
            "client.test", mx_port=server.port, tls=TLSOptions(TLSPolicy.NONE)
        )
        deliverer = Deliverer(reactor, DNSRouter(resolver, reactor), options)
        envelope = Envelope.build("a@example.com", ["gone@example.net", "b@example.net"])
        decided: list[tuple[int, RecipientReport]] = []
        [report] = await deliverer.deliver(
            [Message(envelope, b"hi\n")], on_decided=lambda i, r: decided.append((i, r))
        )
        gone, deferred = report.recipients
        assert (gone.status, gone.failure, gone.reply.code) == (
            Status.FAILED,
            FailureKind.REPLY,
            550,
        )
        assert (deferred.status, deferred.failure) == (Status.DEFERRED, FailureKind.CLOSING)
        assert deferred.reply.code == 421 and not deferred.outcome_unknown
        assert gone.mx == deferred.mx == "mx1.example.net" and gone.attempts == 1
        # Only the refusal was settled for good; on_decided saw the same report.
        assert decided == [(0, gone)]

    def test_refused_and_closing_are_told_apart(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._deliver())
