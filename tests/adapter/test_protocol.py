"""The Twisted adapter with a fake clock and transport: deadlines and hostile input."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mxsend.protocol import ClientConfig, ClientConnection, Envelope, Message, SessionDriver, Status
from mxsend.twisted import SessionOutcome, SMTPClientProtocol, Timeouts

MESSAGE = Message(Envelope.build("a@example.com", ["b@example.net"]), b"hi\n")


class Harness:
    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.clock = Clock()
        self.conn = ClientConnection(ClientConfig("client.example"))
        self.driver = SessionDriver(self.conn, [MESSAGE])
        self.protocol = SMTPClientProtocol(
            self.conn, self.driver, clock=self.clock, timeouts=timeouts or Timeouts(),
            starttls=None,
        )  # fmt: skip
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.outcomes: list[SessionOutcome] = []
        self.protocol.done.addCallback(self.outcomes.append)

    def feed(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self) -> None:
        # StringTransport does not call back; do what a real transport would.
        if not self.outcomes:
            self.protocol.connectionLost(Failure(ConnectionError("closed")))

    def sent(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out


def test_no_greeting_times_out_after_five_minutes() -> None:
    h = Harness()
    h.clock.advance(299)
    assert not h.transport.disconnecting
    h.clock.advance(1)
    assert h.transport.disconnecting
    h.close()
    assert h.outcomes[0].error == "timed out waiting for the reply to greeting"
    assert h.driver.unsent == (MESSAGE,)


def test_trickling_server_cannot_extend_the_deadline() -> None:
    h = Harness()
    for byte in b"220-" + b"x" * 400:
        if h.transport.disconnecting:
            break
        h.feed(bytes([byte]))
        h.clock.advance(1)
    assert h.transport.disconnecting
    h.close()
    assert "greeting" in (h.outcomes[0].error or "")
    assert h.clock.seconds() == 300


def test_each_stage_has_its_own_deadline() -> None:
    h = Harness(Timeouts(greeting=10, ehlo=20, mail=30, rcpt=30, data=5))
    h.feed(b"220 mx\r\n")
    assert h.sent() == b"EHLO client.example\r\n"
    h.clock.advance(19)
    h.feed(b"250 mx\r\n")
    assert h.sent() == b"MAIL FROM:<a@example.com>\r\n"
    h.clock.advance(29)
    h.feed(b"250 ok\r\n")
    assert h.sent() == b"RCPT TO:<b@example.net>\r\n"
    h.clock.advance(29)  # 58 s into MAIL/RCPT: each reply restarts the clock for the next
    h.feed(b"250 ok\r\n")
    assert h.sent() == b"DATA\r\n"
    h.clock.advance(4)
    assert not h.transport.disconnecting
    h.clock.advance(1)
    assert h.transport.disconnecting
    h.close()
    [result] = h.driver.results
    assert result.recipients[0].status is Status.DEFERRED
    assert "DATA" in (h.outcomes[0].error or "")


def test_lost_after_final_dot_is_outcome_unknown() -> None:
    h = Harness()
    h.feed(b"220 mx\r\n")
    h.feed(b"250-mx\r\n250 PIPELINING\r\n")
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert h.sent().endswith(b"hi\r\n.\r\nQUIT\r\n")  # QUIT shares the write
    h.close()
    [result] = h.driver.results
    [bob] = result.recipients
    assert bob.status is Status.DEFERRED and bob.outcome_unknown


def test_response_injection_aborts_before_anything_more_is_sent() -> None:
    h = Harness()
    h.protocol._starttls = lambda: None  # type: ignore[assignment, return-value]  # never reached
    h.feed(b"220 mx\r\n")
    h.feed(b"250-mx\r\n250 STARTTLS\r\n")
    assert h.sent().endswith(b"STARTTLS\r\n")
    h.feed(b"220 go ahead\r\n250-mx\r\n250 AUTH PLAIN\r\n")
    assert h.transport.disconnecting and h.sent() == b""
    h.close()
    assert "protocol error" in (h.outcomes[0].error or "")
    assert h.driver.results == [] and h.driver.unsent == (MESSAGE,)


def test_megabyte_reply_line_is_refused_with_bounded_buffer() -> None:
    h = Harness()
    chunk = b"2" * 65536
    for _ in range(16):
        if h.transport.disconnecting:
            break
        h.feed(chunk)
    assert h.transport.disconnecting
    assert h.conn._parser.pending < 80_000  # never the whole megabyte


def test_hundred_thousand_continuation_lines_are_refused() -> None:
    h = Harness()
    h.feed(b"220-x\r\n" * 100_000)
    assert h.transport.disconnecting
    h.close()
    assert "protocol error" in (h.outcomes[0].error or "")


class TLSTransport(StringTransport):
    def startTLS(self, creator: object) -> None:
        self.tls = creator


def test_the_handshake_runs_under_the_starttls_deadline_then_ehlo_its_own() -> None:
    from mxsend.twisted import ClientTLS

    clock = Clock()
    conn = ClientConnection(ClientConfig("client.example"))
    driver = SessionDriver(conn, [MESSAGE])
    protocol = SMTPClientProtocol(
        conn,
        driver,
        clock=clock,
        timeouts=Timeouts(starttls=10, ehlo=50),
        starttls=lambda: ClientTLS("mx.example", require_verified=False),
    )
    transport = TLSTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"220 mx\r\n")
    protocol.dataReceived(b"250-mx\r\n250 STARTTLS\r\n")
    protocol.dataReceived(b"220 go\r\n")
    assert transport.value().endswith(b"STARTTLS\r\nEHLO client.example\r\n")
    clock.advance(9)
    protocol.handshakeCompleted()  # the EHLO reply now has its own 50 s
    clock.advance(49)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_a_handshake_that_never_ends_times_out_as_starttls() -> None:
    from mxsend.twisted import ClientTLS

    clock = Clock()
    conn = ClientConnection(ClientConfig("client.example"))
    outcomes: list[SessionOutcome] = []
    protocol = SMTPClientProtocol(
        conn,
        SessionDriver(conn, [MESSAGE]),
        clock=clock,
        timeouts=Timeouts(starttls=10),
        starttls=lambda: ClientTLS("mx.example", require_verified=False),
    )
    protocol.done.addCallback(outcomes.append)
    transport = TLSTransport()
    protocol.makeConnection(transport)
    for data in (b"220 mx\r\n", b"250-mx\r\n250 STARTTLS\r\n", b"220 go\r\n"):
        protocol.dataReceived(data)
    clock.advance(10)
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionError("closed")))
    assert outcomes[0].error == "timed out in the TLS handshake"


def test_done_fires_even_when_a_result_callback_raises_at_the_loss() -> None:
    h = Harness()

    def broken(position: int, result: object) -> None:
        raise RuntimeError("the caller's bug")

    h.driver.on_result = broken
    h.feed(b"220 mx\r\n")
    h.feed(b"250-mx\r\n250 PIPELINING\r\n")
    h.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    with pytest.raises(RuntimeError):  # Twisted logs what connectionLost raises
        h.close()  # the transaction completes (unknown) inside connectionLost
    assert len(h.outcomes) == 1  # the session's Deferred fired: nothing waits forever
