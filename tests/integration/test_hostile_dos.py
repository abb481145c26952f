"""A server cannot hold memory or the session: bounded replies, absolute deadlines, and the
message stays deferred (retryable). RFC 5321 4.5.3.2; docs/security.md, denial of service."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend.protocol import Status
from mxsend.twisted import Timeouts
from tests.integration.deliver import deliver_to
from tests.integration.hostile import HostileProtocol, HostileServer, ordinary, serving

SHORT = Timeouts().with_specs(["all=1.5", "connect=5"])


class Hostile(TestCase):
    timeout = 60

    def serve(self, **kwargs: Any) -> HostileServer:
        return serving(self, HostileServer(**kwargs))

    async def _deferred(self, server: HostileServer, text: str) -> None:
        [report] = await deliver_to(server.port, timeouts=SHORT)
        assert report.status is Status.DEFERRED, report
        assert text in report.reply.text, report.reply
        assert server.messages == 0

    def test_megabyte_reply_line(self) -> Deferred[None]:
        server = self.serve(greeting=b"220 " + b"x" * 1_000_000 + b"\r\n")
        return Deferred.fromCoroutine(self._deferred(server, "longer than"))

    def test_hundred_thousand_continuation_lines(self) -> Deferred[None]:
        server = self.serve(greeting=b"220-x\r\n" * 100_000 + b"220 ok\r\n")
        return Deferred.fromCoroutine(self._deferred(server, "longer than"))

    def test_no_greeting_ever(self) -> Deferred[None]:
        server = self.serve(greeting=None)
        return Deferred.fromCoroutine(
            self._deferred(server, "timed out waiting for the reply to greeting")
        )

    def test_one_byte_per_interval(self) -> Deferred[None]:
        # The greeting drips in a byte every 0.2 s and never ends: the deadline is absolute.
        server = self.serve(greeting=None)
        drips: list[task.LoopingCall] = []

        def start_dripping() -> None:
            for protocol in list(server.live):
                loop = task.LoopingCall(protocol.write, b"2")
                loop.start(0.2)
                drips.append(loop)

        reactor.callLater(0.1, start_dripping)  # type: ignore[attr-defined]
        self.addCleanup(lambda: [d.stop() for d in drips if d.running])
        return Deferred.fromCoroutine(self._deferred(server, "timed out"))

    def test_354_then_never_reads_or_answers(self) -> Deferred[None]:
        def silent_after_data(line: bytes, proto: HostileProtocol) -> None:
            if proto.in_data:
                return  # swallow the content; never answer the final dot
            ordinary(line, proto)

        server = self.serve(respond=silent_after_data)

        async def check() -> None:
            [report] = await deliver_to(server.port, timeouts=SHORT)
            assert report.status is Status.DEFERRED and report.outcome_unknown, report

        return Deferred.fromCoroutine(check())
