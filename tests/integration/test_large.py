"""Large messages streamed from files over real sockets: 50 MiB through a real Postfix arrives
byte-identical over DATA and BDAT, plain and after STARTTLS; a server that stops reading trips
the data-block deadline; a file that changes size under the client is deferred, never
delivered, and the session around it ends in reports, not a traceback."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from mxsend._testca import TestCA
from mxsend.protocol import (
    CHUNK_SIZE,
    Body,
    Content,
    Envelope,
    MailOptions,
    Message,
    Status,
)
from mxsend.routing import TLSPolicy
from mxsend.testing import FakeResolver
from mxsend.twisted import (
    Deliverer,
    DeliveryOptions,
    DNSRouter,
    Limits,
    MessageReport,
    RecipientReport,
    Smarthost,
    Timeouts,
    TLSOptions,
)
from tests.conftest import temp_dir
from tests.postfix import Postfix, running_postfix

MIB = 2**20
SENDER = "sender@client.test"

# -- messages ----------------------------------------------------------------------------------


@dataclass
class Written:
    path: Path
    head: bytes  # the header block, canonical (CRLF), without the blank line
    body_sha256: str  # of the body after the blank line, canonical
    body_octets: int


class _Writer:
    """Writes a message line by line, keeping the hash of its canonical (CRLF) body."""

    def __init__(self, path: Path) -> None:
        self.out = path.open("wb")
        self.offset = 0
        self.body = hashlib.sha256()
        self.body_octets = 0
        self.in_body = False
        self.ending = b""

    def line(self, text: bytes, ending: bytes = b"\r\n") -> None:
        if self.ending == b"\r" and not text and ending == b"\n":
            ending = b"\r\n"  # CR, then LF: one line ending, not the two the hash would count
        self.ending = ending
        self.out.write(text + ending)
        self.offset += len(text) + len(ending)
        if self.in_body:
            self.body.update(text + b"\r\n")
            self.body_octets += len(text) + 2

    def fill_to(self, offset: int, ending: bytes) -> None:
        """Lines of about 76 characters until the file is exactly ``offset`` octets long."""
        while offset - self.offset > 200:
            self.line(b"%07d filler, filler and more filler text for the boundary" % self.offset)
        self.line(b"f" * (offset - self.offset - len(ending)), ending)
        assert self.offset == offset


TEXT = [
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    b"Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliq.",
    b".a line that starts with a dot, stuffed over DATA and not over BDAT",
    b".",
    b"..",
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln: 8-bit text, so BODY=8BITMIME",
    b"",
    b"Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu.",
    b"\tindented with a tab; trailing spaces follow   ",
]


def write_message(path: Path, octets: int, subject: str) -> Written:
    """A message of about ``octets``: CRLF lines, a bare LF or CR ending now and then, leading
    dots, 8-bit text; a CR ending the first 64 KiB chunk whose LF starts the second, and a
    dot line starting the third; the last line has no line ending at all."""
    writer = _Writer(path)
    head = [
        b"From: Sender <sender@client.test>",
        b"To: <large@test.example>",
        b"Subject: " + subject.encode(),
        b"Date: Thu, 01 Jan 2026 00:00:00 +0000",
        b"Message-ID: <" + subject.encode().replace(b" ", b".") + b"@client.test>",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
    ]
    for header in head:
        writer.line(header)
    writer.line(b"")
    writer.in_body = True
    writer.fill_to(CHUNK_SIZE + 1, b"\r\n")  # CR last in chunk 1, its LF first in chunk 2
    writer.fill_to(2 * CHUNK_SIZE, b"\n")
    writer.line(b".starts the third chunk")
    endings = [b"\r\n"] * 13 + [b"\n", b"\r\n", b"\r"]
    n = 0
    while writer.offset < octets:
        writer.line(TEXT[n % len(TEXT)], endings[n % len(endings)])
        n += 1
    writer.line(b"no line ending at the very end", b"")
    writer.out.close()
    return Written(path, b"\r\n".join(head), writer.body.hexdigest(), writer.body_octets)


def file_message(path: Path, recipients: list[str]) -> Message:
    content = Content.from_path(path)
    info = content.scan()
    body = Body.EIGHT_BIT_MIME if info.eight_bit else None
    envelope = Envelope.build(SENDER, recipients, MailOptions(size=info.size, body=body))
    return Message(envelope, content)


async def deliver(port: int, messages: list[Message], **options: Any) -> list[MessageReport]:
    opts = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port),
        **{"tls": TLSOptions(TLSPolicy.NONE), **options},
    )
    router = DNSRouter(FakeResolver(), reactor)
    return await Deliverer(reactor, router, opts).deliver(messages)


def only(reports: list[MessageReport]) -> RecipientReport:
    [report] = reports
    [recipient] = report.recipients
    return recipient


# -- (a) 50 MiB through a real Postfix ---------------------------------------------------------


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    """tests/postfix.py's instance, taking messages of any size into its Maildir."""
    with running_postfix() as server:
        etc = str(server.root / "etc")
        subprocess.run(
            ["postconf", "-c", etc, "-e", "message_size_limit=0", "virtual_mailbox_limit=0"],
            check=True,
        )
        subprocess.run(["postfix", "-c", etc, "reload"], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while "SIZE\n" not in ehlo(server.port) + "\n":  # a bare SIZE: no limit any more
            assert time.monotonic() < deadline, "Postfix did not take message_size_limit=0"
            time.sleep(0.1)
        yield server


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Written:
    folder = tmp_path_factory.mktemp("large")
    return write_message(folder / "large.eml", 50 * MIB, "fifty mebibytes")


def ehlo(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            reader = conn.makefile("rb")
            reader.readline()
            conn.sendall(b"EHLO client.test\r\n")
            lines = []
            for _ in range(50):
                line = reader.readline().decode(errors="replace")
                lines.append(line.strip())
                if len(line) < 4 or line[3] != "-":
                    break
            conn.sendall(b"QUIT\r\n")
            return "\n".join(lines)
    except OSError:
        return ""


def delivered_since(postfix: Postfix, before: set[Path], seconds: float = 40) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = postfix.inbox / "new"
        found = set(new.iterdir()) - before if new.exists() else set()
        if found:
            [path] = found
            return path
        time.sleep(0.1)
    raise AssertionError(f"nothing delivered in {seconds} s; log:\n{postfix.log()[-2000:]}")


class ThroughPostfix(TestCase):
    timeout = 120
    postfix: ClassVar[Postfix]
    large: ClassVar[Written]

    @pytest.fixture(autouse=True)
    def _servers(self, postfix: Postfix, large: Written) -> None:
        type(self).postfix, type(self).large = postfix, large

    async def _identical(self, chunking: bool, tls: TLSPolicy) -> None:
        new = self.postfix.inbox / "new"
        before = set(new.iterdir()) if new.exists() else set()
        started = time.monotonic()
        options = {"chunking": chunking, "tls": TLSOptions(tls, str(self.postfix.cafile))}
        message = file_message(self.large.path, ["large@test.example"])
        report = only(await deliver(self.postfix.port, [message], **options))
        assert report.status is Status.DELIVERED, report
        assert (report.tls is not None) is (tls is TLSPolicy.VERIFY), report
        arrived = delivered_since(self.postfix, before).read_bytes()  # LF line endings
        head, sep, body = arrived.partition(b"\n\n")
        assert sep, arrived[:500]
        # Postfix put Return-Path, Delivered-To and Received above the original headers.
        assert head.replace(b"\n", b"\r\n").endswith(b"\r\n" + self.large.head)
        canonical = body.replace(b"\n", b"\r\n")
        assert len(canonical) == self.large.body_octets
        assert hashlib.sha256(canonical).hexdigest() == self.large.body_sha256
        assert time.monotonic() - started < 30
        for _ in range(100):  # smtpd logs the session's commands when it ends
            session = self.postfix.log().rsplit(" connect from", 1)[-1]
            if "disconnect from" in session:
                break
            await task.deferLater(reactor, 0.1)
        assert ("bdat=" if chunking else "data=1") in session, session[-1000:]

    async def _several_over_bdat(self) -> None:
        # Small messages, each BDAT LAST with its envelope: one session, every one arrives,
        # and each waits for the final reply before it (one outcome unknown at a time).
        new = self.postfix.inbox / "new"
        before = set(new.iterdir()) if new.exists() else set()
        messages = [
            Message(
                Envelope.build(SENDER, [f"several{i}@test.example"]),
                f"Subject: several {i}\n\nbody {i}\n".encode(),
            )
            for i in range(5)
        ]
        reports = await deliver(self.postfix.port, messages, limits=Limits(connections=1))
        assert [r.status for m in reports for r in m.recipients] == [Status.DELIVERED] * 5
        for _ in range(100):  # smtpd logs the session's commands when it ends
            session = self.postfix.log().rsplit(" connect from", 1)[-1]
            if "disconnect from" in session:
                break
            await task.deferLater(reactor, 0.1)
        assert "mail=5" in session and "bdat=5" in session, session[-1000:]
        deadline = time.monotonic() + 40
        arrived: set[bytes] = set()
        while len(arrived) < 5 and time.monotonic() < deadline:
            found = set(new.iterdir()) - before if new.exists() else set()
            arrived = {b for p in found for b in p.read_bytes().split(b"\n") if b"body " in b}
            await task.deferLater(reactor, 0.1)
        assert arrived == {f"body {i}".encode() for i in range(5)}

    def test_several_messages_over_bdat(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._several_over_bdat())

    def test_data_plain(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._identical(False, TLSPolicy.NONE))

    def test_bdat_plain(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._identical(True, TLSPolicy.NONE))

    def test_data_after_starttls(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._identical(False, TLSPolicy.VERIFY))

    def test_bdat_after_starttls(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._identical(True, TLSPolicy.VERIFY))


# -- (b) a server that stops reading mid-body --------------------------------------------------


class StallingServer:
    """Plain sockets on 127.0.0.1: answers EHLO, MAIL and RCPT (and STARTTLS, given a
    certificate), then DATA with 354 (or takes the BDAT command line) and never reads again.
    A small receive buffer, so the client's writes back up soon. With ``pace``, it reads the
    DATA content slowly instead (64 KiB every ``pace`` seconds) and takes the message."""

    def __init__(
        self, *, chunking: bool, tls: ssl.SSLContext | None = None, pace: float | None = None
    ) -> None:
        self.chunking = chunking
        self.tls = tls
        self.pace = pace
        self.received = 0
        self.listener = socket.socket()
        buffer = 4096 if pace is None else CHUNK_SIZE
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)  # accepted: inherit
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.done = threading.Event()
        self.commands: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(30)
        with conn:
            conn.sendall(b"220 stall.test ESMTP\r\n")
            reader = conn.makefile("rb")
            ehlo = b"250-stall.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            ehlo += b"250-CHUNKING\r\n" if self.chunking else b""
            for _ in range(20):
                line = reader.readline(1000)
                self.commands.append(line.strip())
                verb = line[:4].upper()
                if verb == b"EHLO":
                    starttls = self.tls is not None and not isinstance(conn, ssl.SSLSocket)
                    conn.sendall(
                        ehlo + (b"250-STARTTLS\r\n" if starttls else b"") + b"250 SIZE\r\n"
                    )
                elif line.strip().upper() == b"STARTTLS" and self.tls is not None:
                    conn.sendall(b"220 go ahead\r\n")
                    conn = self.tls.wrap_socket(conn, server_side=True)
                    reader = conn.makefile("rb")
                elif verb in (b"MAIL", b"RCPT"):
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    break
                elif verb == b"BDAT" or not line:
                    break
                else:
                    conn.sendall(b"502 no\r\n")
            if self.pace is not None:
                self._trickle(conn, reader)
            self.stalled.set()
            self.done.wait(30)  # never read again, until the test ends
            conn.close()

    def _trickle(self, conn: socket.socket, reader: Any) -> None:
        assert self.pace is not None
        tail = b""
        while not self.done.is_set():
            try:
                data = reader.read1(CHUNK_SIZE)
            except OSError:  # the client gave up: its report says why
                return
            if not data:
                return
            self.received += len(data)
            tail = tail[-4:] + data
            _, end, after = tail.partition(b"\r\n.\r\n")
            if end:
                conn.sendall(b"250 2.0.0 taken, slowly\r\n")
                if (after or reader.readline(1000)).upper().startswith(b"QUIT"):  # pipelined
                    conn.sendall(b"221 bye\r\n")
                return
            time.sleep(self.pace)

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


class StopsReading(TestCase):
    timeout = 60
    large: ClassVar[Written]

    @pytest.fixture(autouse=True)
    def _file(self, large: Written) -> None:
        type(self).large = large  # 50 MiB: more than the socket buffers hold

    async def _trips_block_deadline(self, tmp: Path, chunking: bool, tls: bool = False) -> None:
        path = self.large.path
        context, options = None, {}
        if tls:
            ca = TestCA()
            issued = ca.issue("127.0.0.1")
            (tmp / "server.pem").write_bytes(issued.pem)
            (tmp / "ca.pem").write_bytes(ca.cert_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tmp / "server.pem")
            options = {"tls": TLSOptions(TLSPolicy.VERIFY, str(tmp / "ca.pem"))}
        server = StallingServer(chunking=chunking, tls=context)
        self.addCleanup(server.close)
        started = time.monotonic()
        report = only(
            await deliver(
                server.port,
                [file_message(path, ["rcpt@stall.test"])],
                chunking=chunking,
                timeouts=Timeouts().with_specs(["block=1"]),
                **options,
            )
        )
        elapsed = time.monotonic() - started
        assert server.stalled.is_set(), server.commands
        assert report.status is Status.DEFERRED, report
        assert report.reply.local and "timed out" in report.reply.text, report.reply
        assert (report.tls is not None) is tls, report
        assert 1 <= elapsed < 8, elapsed
        assert server.commands[-1].startswith(b"BDAT" if chunking else b"DATA"), server.commands

    def test_data(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._trips_block_deadline(temp_dir(self), False))

    async def _slow_but_steady(self, tmp: Path) -> None:
        # The deadline is for each block, not for the whole content: a server taking at most
        # 64 KiB every 20 ms (about 2 MB/s) gets an 8 MiB message that takes several seconds.
        path = tmp / "slow.eml"
        octets = write_message(path, 8 * MIB, "slow").body_octets
        server = StallingServer(chunking=False, pace=0.02)
        self.addCleanup(server.close)
        started = time.monotonic()
        report = only(
            await deliver(
                server.port,
                [file_message(path, ["rcpt@slow.test"])],
                chunking=False,
                timeouts=Timeouts().with_specs(["block=0.5"]),
            )
        )
        elapsed = time.monotonic() - started
        assert report.status is Status.DELIVERED, report
        assert server.received > octets
        assert elapsed > 4 * 0.5, elapsed  # the client waited for the server, many blocks long

    def test_slow_but_steady_reader_is_not_timed_out(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._slow_but_steady(temp_dir(self)))

    def test_bdat(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._trips_block_deadline(temp_dir(self), True))

    def test_data_after_starttls(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._trips_block_deadline(temp_dir(self), False, True))

    def test_bdat_after_starttls(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._trips_block_deadline(temp_dir(self), True, True))


# -- (c) a file that changes size under the client ---------------------------------------------


@dataclass
class SinkServer:
    """DATA and BDAT into memory; ``messages`` holds what ended with '.' or BDAT LAST,
    ``partial`` counts transactions cut off by the client."""

    chunking: bool
    messages: list[bytes] = field(default_factory=list)
    partial: int = 0
    sessions: int = 0
    live: int = 0
    port: int = 0
    listening: Any = None

    def start(self) -> None:
        factory: Any = Factory.forProtocol(lambda: _SinkProtocol(self))
        self.listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port


class _SinkProtocol(Protocol):
    def __init__(self, server: SinkServer) -> None:
        self.server = server
        self.buffer = b""
        self.body = bytearray()
        self.mode = "command"  # or "data", "bdat"
        self.left = 0
        self.last = False

    def connectionMade(self) -> None:
        self.server.sessions += 1
        self.server.live += 1
        self.reply(b"220 sink.test ESMTP")

    def reply(self, line: bytes) -> None:
        assert self.transport is not None
        self.transport.write(line + b"\r\n")

    def connectionLost(self, reason: Any = None) -> None:
        self.server.live -= 1
        if self.mode != "command" or self.body:
            self.server.partial += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.mode == "data":
                start = max(0, len(self.body) - 4)  # the end may straddle two reads
                self.body += self.buffer
                self.buffer = b""
                end = self.body.find(b"\r\n.\r\n", start)
                if end < 0:
                    return
                self.buffer = bytes(self.body[end + 5 :])
                # body starts with a CRLF of ours, so a "." first line ends the data too
                self.finish(bytes(self.body[: end + 2]).replace(b"\r\n..", b"\r\n.")[2:])
            elif self.mode == "bdat":
                take = self.buffer[: self.left]
                self.buffer = self.buffer[len(take) :]
                self.body += take
                self.left -= len(take)
                if self.left:
                    return
                self.mode = "command"
                if self.last:
                    self.finish(bytes(self.body))
                else:
                    self.reply(b"250 2.0.0 chunk ok")
            else:
                line, sep, rest = self.buffer.partition(b"\r\n")
                if not sep:
                    return
                self.buffer = rest
                self.command(line)

    def finish(self, message: bytes) -> None:
        self.server.messages.append(message)
        self.body = bytearray()
        self.mode = "command"
        self.reply(b"250 2.0.0 queued")

    def command(self, line: bytes) -> None:
        verb, _, rest = line.partition(b" ")
        verb = verb.upper()
        if verb == b"EHLO":
            extra = b"250-CHUNKING\r\n" if self.server.chunking else b""
            self.reply(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n" + extra + b"250 SIZE")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            self.reply(b"250 ok")
        elif verb == b"DATA":
            self.mode = "data"
            self.body = bytearray(b"\r\n")
            self.reply(b"354 go ahead")
        elif verb == b"BDAT" and self.server.chunking:
            size, _, last = rest.partition(b" ")
            self.mode, self.left, self.last = "bdat", int(size), last.upper() == b"LAST"
            if self.left == 0 and self.last:
                self.finish(bytes(self.body))
            elif self.left == 0:
                self.mode = "command"
                self.reply(b"250 ok")
        elif verb == b"QUIT":
            self.reply(b"221 bye")
            assert self.transport is not None
            self.transport.loseConnection()
        else:
            self.reply(b"502 5.5.2 no")


def small_message(marker: str) -> Message:
    content = f"Subject: {marker}\r\n\r\n{marker} body\r\n".encode()
    return Message(Envelope.build(SENDER, [f"{marker}@sink.test"]), content)


class ContentChanges(TestCase):
    timeout = 60

    def serve(self, chunking: bool) -> SinkServer:
        server = SinkServer(chunking)
        server.start()
        self.addCleanup(server.listening.stopListening)
        return server

    async def _changed(self, change: str, chunking: bool) -> None:
        tmp = temp_dir(self)
        server = self.serve(chunking)
        path = tmp / "changing.eml"
        write_message(path, 4 * MIB, "changing")
        changed: Message
        if change == "list grows":
            chunks = [path.read_bytes()[i : i + CHUNK_SIZE] for i in range(0, 4 * MIB, CHUNK_SIZE)]
            content = Content.from_chunks(chunks)
            info = content.scan()
            chunks.append(b"one chunk more, after the scan\r\n")
            envelope = Envelope.build(SENDER, ["changing@sink.test"], MailOptions(size=info.size))
            changed = Message(envelope, content)
        else:
            changed = file_message(path, ["changing@sink.test"])
            with path.open("r+b") as handle:
                if change == "appended":
                    handle.seek(0, 2)
                    handle.write(b"\r\nappended after the scan\r\n")
                else:
                    handle.truncate(3 * MIB + 12345)
        messages = [small_message("first"), changed, small_message("third")]
        first, middle, third = await deliver(server.port, messages, chunking=chunking)
        [one], [two], [three] = first.recipients, middle.recipients, third.recipients
        assert one.status is Status.DELIVERED, one
        assert two.status is Status.DEFERRED, two
        assert two.reply.local and two.reply.code == 451, two.reply
        assert "changed" in two.reply.text, two.reply
        # The session was cut for the changed message alone: the next goes in a new one.
        assert three.status is Status.DELIVERED, three
        for _ in range(100):  # the server's side of the connection closes a moment later
            if not server.live:
                break
            await task.deferLater(reactor, 0.05)
        assert not any(b"changing" in m for m in server.messages), len(server.messages)
        assert len(server.messages) == 2, [m[:60] for m in server.messages]
        assert server.partial >= 1  # the body was cut off: the client aborted the connection

    def test_appended_over_data(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._changed("appended", False))

    def test_appended_over_bdat(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._changed("appended", True))

    def test_truncated_over_data(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._changed("truncated", False))

    def test_truncated_over_bdat(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._changed("truncated", True))

    def test_chunk_list_grows_over_data(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._changed("list grows", False))

    def test_chunk_list_grows_over_bdat(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._changed("list grows", True))
