"""Delivery through the Twisted shell against the local world (real sockets on loopback)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from mxsend._demo import RECIPIENTS, build_world
from mxsend._world import LocalWorld
from mxsend.protocol import Envelope, Message, Status
from mxsend.routing import TLSPolicy
from mxsend.twisted import (
    Deliverer,
    DeliveryOptions,
    DNSRouter,
    MessageReport,
    TLSOptions,
    make_resolver,
)


class WorldDelivery(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.world: LocalWorld = build_world(reactor)
        self.world.start()
        self.addCleanup(self.world.stop)

    def deliver(self, recipients: list[str], **options: Any) -> Deferred[list[MessageReport]]:
        router = DNSRouter(make_resolver(self.world.dns, reactor), reactor)
        opts = DeliveryOptions(
            "client.test",
            mx_port=self.world.mx_port,
            tls=TLSOptions(cafile=self.world.cafile),
            **options,
        )
        message = Message(Envelope.build("sender@client.test", recipients), b"Subject: x\n\nhi\n")
        return Deliverer(reactor, router, opts).deliver([message])

    async def _demo_outcomes(self) -> None:
        [report] = await self.deliver(RECIPIENTS)
        by = {r.recipient: r for r in report.recipients}
        assert by["ann@alpha.test"].status is Status.DELIVERED
        assert by["ann@alpha.test"].mx == "mx2.alpha.test"
        assert by["ann@alpha.test"].attempts == 2
        bob = by["bob@beta.test"]
        assert bob.status is Status.DELIVERED and bob.tls is not None and bob.tls.verified
        assert by["nobody@gamma.test"].reply.code == 550
        assert by["busy@gamma.test"].status is Status.DEFERRED
        void = by["anyone@void.test"]
        assert void.reply.code == 556 and void.mx is None and void.attempts == 0
        server = self.world.hosts[0].server
        assert server is not None and server.messages[0].recipients == ["ann@alpha.test"]

    def test_demo_outcomes(self) -> Deferred[None]:
        return ensureDeferred(self._demo_outcomes())

    async def _settled_early(self) -> None:
        # A queue makes each settled recipient durable as its transaction ends: on_decided
        # passes on the delivered and the refused for good while the sessions still run,
        # never the deferred (another host, or a later try, may still take them).
        router = DNSRouter(make_resolver(self.world.dns, reactor), reactor)
        opts = DeliveryOptions(
            "client.test", mx_port=self.world.mx_port, tls=TLSOptions(cafile=self.world.cafile)
        )
        envelope = Envelope.build("s@client.test", ["nobody@gamma.test", "busy@gamma.test"])
        messages = [
            Message(Envelope.build("s@client.test", ["ann@alpha.test"]), b"x\n"),
            Message(envelope, b"y\n"),
        ]
        seen: list[tuple[int, str, Status]] = []
        done = Deliverer(reactor, router, opts).deliver(
            messages, on_decided=lambda i, r: seen.append((i, r.recipient, r.status))
        )
        reports = await done
        assert sorted(seen) == [
            (0, "ann@alpha.test", Status.DELIVERED),
            (1, "nobody@gamma.test", Status.FAILED),
        ], seen
        assert [r.status for r in reports[1].recipients] == [Status.FAILED, Status.DEFERRED]

    def test_settled_recipients_are_passed_on_as_they_are_decided(self) -> Deferred[None]:
        return ensureDeferred(self._settled_early())

    async def _verify_without_ca_defers(self) -> None:
        router = DNSRouter(make_resolver(self.world.dns, reactor), reactor)
        opts = DeliveryOptions(
            "client.test", mx_port=self.world.mx_port, tls=TLSOptions(TLSPolicy.VERIFY)
        )
        message = Message(Envelope.build("s@client.test", ["bob@beta.test"]), b"x\n")
        [report] = await Deliverer(reactor, router, opts).deliver([message])
        [bob] = report.recipients
        assert bob.status is Status.DEFERRED, bob
        beta = self.world.hosts[1].server
        assert beta is None or beta.messages == []  # nothing went out in cleartext

    def test_verify_policy_without_trusted_ca_defers(self) -> Deferred[None]:
        return ensureDeferred(self._verify_without_ca_defers())

    async def _may_records_unverified(self) -> None:
        router = DNSRouter(make_resolver(self.world.dns, reactor), reactor)
        opts = DeliveryOptions("client.test", mx_port=self.world.mx_port)  # no cafile
        message = Message(Envelope.build("s@client.test", ["bob@beta.test"]), b"x\n")
        [report] = await Deliverer(reactor, router, opts).deliver([message])
        [bob] = report.recipients
        assert bob.status is Status.DELIVERED
        assert bob.tls is not None and not bob.tls.verified

    def test_may_policy_delivers_and_records_unverified(self) -> Deferred[None]:
        return ensureDeferred(self._may_records_unverified())

    async def _nxdomain(self) -> None:
        [report] = await self.deliver(["x@nosuch.test", "y@alpha.test"])
        nosuch, alpha = report.recipients
        assert nosuch.status is Status.FAILED and nosuch.reply.code == 550
        assert alpha.status is Status.DELIVERED

    def test_nxdomain_is_permanent_and_does_not_stop_others(self) -> Deferred[None]:
        return ensureDeferred(self._nxdomain())


class PublicAPI(TestCase):
    timeout = 60

    async def _async_def(self) -> None:
        from mxsend.twisted import deliver

        world = build_world(reactor)
        world.start()
        self.addCleanup(world.stop)
        options = DeliveryOptions(
            "client.test", mx_port=world.mx_port, tls=TLSOptions(cafile=world.cafile)
        )
        message = Message(Envelope.build("me@client.test", ["ann@alpha.test"]), b"hi\n")
        [report] = await deliver(reactor, [message], options, dns=world.dns)
        assert [r.status for r in report.recipients] == [Status.DELIVERED]

    def test_deliver_is_awaitable_from_async_def(self) -> Deferred[None]:
        return ensureDeferred(self._async_def())
