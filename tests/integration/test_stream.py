"""Deliverer.stream against Postfix's smtp-sink: messages read lazily, a window at a time,
each report passed on once its window settles, indices counted over the whole stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend.model import MessageReport, RecipientReport
from mxsend.protocol import Envelope, Message, Status
from mxsend.routing import TLSPolicy
from mxsend.testing import FakeResolver
from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Limits, Smarthost, TLSOptions
from tests.conftest import smtp_sink


def numbered(count: int, read: list[int]) -> Iterator[Message]:
    """``count`` messages, each with its own content; ``read`` records how far it was read."""
    for n in range(count):
        read.append(n)
        # Every third message has a second recipient in another domain (the smarthost takes
        # both), so reports must come back in each envelope's order.
        recipients = [f"r{n}@sink.test"] + ([f"x{n}@other.test"] if n % 3 == 0 else [])
        yield Message(Envelope.build("a@client.test", recipients), b"Subject: %d\n\nhi\n" % n)


def deliverer(port: int, connections: int = 3) -> Deliverer:
    options = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port),
        tls=TLSOptions(TLSPolicy.NONE),
        limits=Limits(connections=connections),
    )
    return Deliverer(reactor, DNSRouter(FakeResolver(), reactor), options)


class StreamTests(TestCase):
    timeout = 120

    async def _stream(self, count: int, window: int) -> None:
        read: list[int] = []
        reports: list[tuple[int, MessageReport]] = []
        decided: list[tuple[int, RecipientReport]] = []

        def on_report(index: int, report: MessageReport) -> None:
            # Never more than one window read ahead of what was reported.
            assert len(read) <= index + 1 + window, (len(read), index)
            reports.append((index, report))

        with smtp_sink() as port:
            total = await deliverer(port).stream(
                numbered(count, read),
                on_report,
                on_decided=lambda i, r: decided.append((i, r)),
                window=window,
            )
        assert total == count
        assert sorted(i for i, _ in reports) == list(range(count))
        for index, report in reports:
            names = [str(r.address) for r in report.message.envelope.recipients]
            assert names[0] == f"r{index}@sink.test"  # the report is for that message
            assert [r.recipient for r in report.recipients] == names
            assert all(r.status is Status.DELIVERED for r in report.recipients)
        # Each recipient was decided once, under the index of its own message.
        assert sorted((i, r.recipient) for i, r in decided) == sorted(
            (i, r.recipient) for i, rep in reports for r in rep.recipients
        )

    def test_windows_smaller_than_the_stream(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stream(50, 7))

    def test_one_window(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stream(20, 1000))

    def test_empty_stream(self) -> Deferred[None]:
        async def run() -> None:
            seen: list[int] = []
            total = await deliverer(1).stream(iter(()), lambda i, r: seen.append(i))
            assert (total, seen) == (0, [])

        return Deferred.fromCoroutine(run())

    def test_window_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="window"):
            deliverer(1).stream([], lambda i, r: None, window=0)
