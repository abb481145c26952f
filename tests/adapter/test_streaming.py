"""Streaming content through the adapter: pull-producer flow control, the data-block deadline,
content that cannot be sent whole."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mxsend.protocol import (
    CHUNK_SIZE,
    ClientConfig,
    ClientConnection,
    Content,
    Envelope,
    Message,
    SessionDriver,
    Status,
)
from mxsend.protocol._session import INLINE_BODY
from mxsend.twisted import SessionOutcome, SMTPClientProtocol, Timeouts

LINE = b"y" * 70 + b"\n"
EHLO_PLAIN = b"250-mx\r\n250 PIPELINING\r\n"
EHLO_BDAT = b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n"


def big_file(path: Path, lines: int = 20_000) -> Path:
    with path.open("wb") as handle:
        handle.write(b"Subject: big\n\n")
        for i in range(lines):
            handle.write(b".dot\n" if i % 1000 == 0 else LINE)
    return path


class Harness:
    def __init__(self, content: bytes | Content, timeouts: Timeouts | None = None) -> None:
        self.clock = Clock()
        self.conn = ClientConnection(ClientConfig("client.example"))
        envelope = Envelope.build("a@example.com", ["b@example.net"])
        self.driver = SessionDriver(self.conn, [Message(envelope, content)])
        self.protocol = SMTPClientProtocol(
            self.conn,
            self.driver,
            clock=self.clock,
            timeouts=timeouts or Timeouts(),
            starttls=None,
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.outcomes: list[SessionOutcome] = []
        self.protocol.done.addCallback(self.outcomes.append)

    def greet(self, ehlo: bytes) -> bytes:
        self.protocol.dataReceived(b"220 mx\r\n")
        self.sent()
        self.protocol.dataReceived(ehlo)
        return self.sent()

    def sent(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def pull_all(self, limit: int = 10_000) -> list[bytes]:
        """Do what a transport does: ask for more each time it has written what it had."""
        writes = []
        for _ in range(limit):
            if self.transport.producer is None:
                break
            self.transport.producer.resumeProducing()
            writes.append(self.sent())
        return writes

    def close(self) -> None:
        if not self.outcomes:
            self.protocol.connectionLost(Failure(ConnectionError("closed")))


def unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_a_file_is_streamed_a_chunk_per_pull(tmp_path: Path) -> None:
    path = big_file(tmp_path / "m.eml")
    h = Harness(Content.from_path(path))
    assert h.greet(EHLO_PLAIN).startswith(b"MAIL FROM:<a@example.com>\r\nRCPT")
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert h.transport.producer is h.protocol and not h.transport.streaming
    writes = h.pull_all()
    assert h.transport.producer is None  # unregistered at the end
    body = b"".join(writes)
    # No write holds much more than one chunk: the file is never buffered whole.
    assert max(len(w) for w in writes) <= CHUNK_SIZE * 2 + 64
    assert len(writes) > path.stat().st_size // CHUNK_SIZE
    assert body.endswith(b"\r\n.\r\nQUIT\r\n")
    assert unstuff(body[: -len(b"QUIT\r\n")]) == path.read_bytes().replace(b"\n", b"\r\n")
    h.protocol.dataReceived(b"250 queued\r\n221 bye\r\n")
    [result] = h.driver.results
    assert result.recipients[0].status is Status.DELIVERED


def test_large_bytes_stream_too_small_bytes_go_at_once() -> None:
    small = Harness(b"hi\n")
    small.greet(EHLO_PLAIN)
    small.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert small.transport.producer is None and small.sent() == b"hi\r\n.\r\nQUIT\r\n"
    large = Harness(LINE * (INLINE_BODY // len(LINE) + 1))
    large.greet(EHLO_PLAIN)
    large.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert large.transport.producer is large.protocol


def test_a_server_that_stops_reading_trips_the_block_deadline(tmp_path: Path) -> None:
    h = Harness(Content.from_path(big_file(tmp_path / "m.eml")), Timeouts(block=7))
    h.greet(EHLO_PLAIN)
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):  # the server takes three chunks, then stops
        h.transport.producer.resumeProducing()
        h.clock.advance(6)
    assert not h.transport.disconnecting
    h.clock.advance(1.5)
    assert h.transport.disconnecting
    h.close()
    assert "stopped reading" in (h.outcomes[0].error or "")
    [recipient] = h.driver.results[0].recipients
    assert recipient.status is Status.DEFERRED and not recipient.outcome_unknown


def test_a_file_that_shrinks_after_its_scan_defers_that_message(tmp_path: Path) -> None:
    path = big_file(tmp_path / "m.eml")
    content = Content.from_path(path)
    content.scan()
    os.truncate(path, path.stat().st_size - 100)
    h = Harness(content)
    h.greet(EHLO_PLAIN)
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    writes = h.pull_all()
    assert not b"".join(writes).endswith(b".\r\n")  # the end of data never went out
    assert h.transport.disconnecting
    h.close()
    [recipient] = h.driver.results[0].recipients
    assert recipient.status is Status.DEFERRED
    assert str(recipient.reply.enhanced) == "4.3.0" and "changed" in recipient.reply.text


def test_a_file_that_grows_is_caught_before_the_extra_octets_go(tmp_path: Path) -> None:
    path = big_file(tmp_path / "m.eml")
    content = Content.from_path(path)
    size = content.scan().raw_size
    with path.open("ab") as handle:
        handle.write(b"\r\n.\r\nMAIL FROM:<forged@example.com>\r\n")
    h = Harness(content)
    h.greet(EHLO_PLAIN)
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    wire = b"".join(h.pull_all())
    assert b"forged" not in wire and size is not None and len(wire) < size * 2
    h.close()
    assert h.driver.results[0].recipients[0].status is Status.DEFERRED


def test_a_long_line_found_mid_stream_fails_that_message() -> None:
    chunks = [LINE * 5000, b"z" * 2000 + b"\n"]  # unscanned: the encoder finds it
    h = Harness(Content.from_chunks(chunks))
    h.greet(EHLO_PLAIN)
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
    h.pull_all()
    assert h.transport.disconnecting
    h.close()
    [recipient] = h.driver.results[0].recipients
    assert recipient.status is Status.FAILED and recipient.reply.code == 554


def test_bdat_stops_reading_once_a_chunk_is_refused(tmp_path: Path) -> None:
    path = big_file(tmp_path / "m.eml", lines=40_000)
    h = Harness(Content.from_path(path))
    h.greet(EHLO_BDAT)
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n")
    first = h.pull_all(limit=2)
    assert b"".join(first).startswith(b"BDAT ")
    h.protocol.dataReceived(b"552 5.3.4 too big\r\n")
    rest = h.pull_all()
    assert sum(map(len, rest)) < CHUNK_SIZE  # nothing more of the file went out
    assert h.transport.producer is None
    assert rest[-1].endswith(b"QUIT\r\n")
    h.protocol.dataReceived(b"552 5.3.4 too big\r\n221 bye\r\n")  # the second chunk, QUIT
    [recipient] = h.driver.results[0].recipients
    assert recipient.status is Status.FAILED and recipient.reply.code == 552


def test_a_file_waits_for_the_final_reply_before_it_so_its_failure_costs_no_other() -> None:
    clock = Clock()
    conn = ClientConnection(ClientConfig("client.example"))
    first = Message(Envelope.build("a@example.com", ["b@example.net"]), b"first\n")
    broken = Message(
        Envelope.build("a@example.com", ["c@example.net"]), Content.from_path("/nonexistent")
    )
    driver = SessionDriver(conn, [first, broken])
    protocol = SMTPClientProtocol(conn, driver, clock=clock, timeouts=Timeouts(), starttls=None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"220 mx\r\n")
    protocol.dataReceived(EHLO_BDAT)
    protocol.dataReceived(b"250 ok\r\n250 ok\r\n")  # MAIL, RCPT of the first
    wire = transport.value()
    assert b"BDAT 7 LAST\r\nfirst\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.net>" in wire
    assert transport.producer is None and not transport.disconnecting  # waits for the 250
    protocol.dataReceived(b"250 2.0.0 first queued\r\n")  # now the second may fail
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionError("closed")))
    delivered, deferred = (result.recipients[0] for result in driver.results)
    assert delivered.status is Status.DELIVERED and not delivered.outcome_unknown
    assert deferred.status is Status.DEFERRED and str(deferred.reply.enhanced) == "4.3.0"


def test_large_bytes_under_bdat_wait_for_the_final_reply_before_them() -> None:
    # Without a 354 to wait for, their chunks would go while the message before's outcome is
    # still unknown: two outcomes unknown at once.
    conn = ClientConnection(ClientConfig("client.example"))
    first = Message(Envelope.build("a@example.com", ["b@example.net"]), b"first\n")
    large = Message(Envelope.build("a@example.com", ["c@example.net"]), LINE * (INLINE_BODY // 70))
    driver = SessionDriver(conn, [first, large])
    protocol = SMTPClientProtocol(conn, driver, clock=Clock(), timeouts=Timeouts(), starttls=None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"220 mx\r\n")
    protocol.dataReceived(EHLO_BDAT)
    protocol.dataReceived(b"250 ok\r\n250 ok\r\n")  # MAIL, RCPT of the first
    assert transport.producer is None and b"BDAT 7 LAST" in transport.value()
    assert transport.value().count(b"BDAT") == 1  # the second's envelope only
    protocol.dataReceived(b"250 2.0.0 first queued\r\n")
    assert transport.producer is not None  # now it streams
    protocol.connectionLost(Failure(ConnectionError("closed")))


def test_a_421_while_content_streams_stops_the_stream(tmp_path: Path) -> None:
    h = Harness(Content.from_path(big_file(tmp_path / "m.eml")))
    h.greet(EHLO_BDAT)
    h.protocol.dataReceived(b"250 ok\r\n250 ok\r\n")
    h.pull_all(limit=3)
    h.protocol.dataReceived(b"421 4.3.2 shutting down\r\n")
    assert h.transport.producer is None and h.transport.disconnecting
    h.sent()
    h.protocol.resumeProducing()  # a late pull from the transport does nothing
    assert h.sent() == b""
    h.close()
    assert h.driver.results[0].recipients[0].reply.code == 421
