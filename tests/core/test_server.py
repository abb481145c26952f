"""The sans-I/O SMTP server (sendmail -bs): transcripts fed whole and one byte at a time,
every refusal, the limits, smuggling attempts, and round trips with the client's encoder."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mxsend.protocol import (
    AddressError,
    Body,
    BodyEncoder,
    ClientConfig,
    ClientConnection,
    Envelope,
    LinePolicy,
    LocalProtocolError,
    MailOptions,
    Message,
    MessageAborted,
    MessageData,
    MessageReceived,
    MessageStarted,
    ParameterError,
    Reply,
    ReplyParser,
    ServerConfig,
    ServerConnection,
    ServerEvent,
    ServerState,
    SessionClosed,
    SessionDriver,
    Status,
)
from mxsend.protocol._server import MAX_COMMAND_LINE, MAX_PAUSED_INPUT, MAX_TEXT_LINE

HOST = "mx.test"
GREETING = b"220 mx.test ESMTP mxsend\r\n"
EHLO = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)
ENVELOPE = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
ENVELOPE_OK = EHLO + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"


@dataclass
class Peer:
    """A server session and what it said and reported; messages are accepted as Q1, Q2...
    unless ``verdict`` decides otherwise."""

    config: ServerConfig = field(default_factory=lambda: ServerConfig(HOST))
    verdict: Callable[[ServerConnection, MessageReceived], None] | None = None
    server: ServerConnection = field(init=False)
    events: list[ServerEvent] = field(default_factory=list)
    accepted: int = 0

    def __post_init__(self) -> None:
        self.server = ServerConnection(self.config)
        assert self.server.data_to_send() == GREETING

    def feed(self, data: bytes, *, bytewise: bool = False) -> bytes:
        """Feed ``data`` (whole, or one byte at a time); return what the server said."""
        out = b""
        pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        for piece in pieces or [b""]:
            self.server.receive_data(piece)
            self.pump()
            out += self.server.data_to_send()
        return out

    def pump(self) -> None:
        while (event := self.server.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, MessageReceived):
                if self.verdict is not None:
                    self.verdict(self.server, event)
                else:
                    self.accepted += 1
                    self.server.accept_message(f"Q{self.accepted}")

    def of(self, kind: type[ServerEvent]) -> list[ServerEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def content(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, MessageData))

    @property
    def received(self) -> list[MessageReceived]:
        return [e for e in self.events if isinstance(e, MessageReceived)]


def replies(out: bytes) -> list[str]:
    """Each reply line without its CRLF."""
    assert out == b"" or out.endswith(b"\r\n"), out
    return out.decode().split("\r\n")[:-1]


# -- golden transcripts: (client sends, server replies), fed whole and byte by byte -------

OK, RCPT_OK, GO = "250 2.0.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"
HELLO = replies(EHLO)
UNRECOGNIZED = "500 5.5.2 Error: command not recognized"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
BAD_RCPT = "501 5.1.3 Bad recipient address syntax"
NEED_UTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
FIRST = "503 5.5.1 Error: send HELO/EHLO first"
NOT_IMPLEMENTED = "502 5.5.1 Error: command not implemented"
STARTED = [*HELLO, "250 2.1.0 Ok", RCPT_OK]

#: Name -> (what the client sends, each reply line the server gives).
TRANSCRIPTS: dict[str, tuple[bytes, list[str]]] = {
    "data": (
        ENVELOPE + b"DATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
        [*STARTED, GO, "250 2.0.0 Ok: queued as Q1", "221 2.0.0 Bye"],
    ),
    "helo": (
        b"HELO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n",
        ["250 mx.test", "250 2.1.0 Ok", RCPT_OK, GO, "250 2.0.0 Ok: queued as Q1"],
    ),
    "bdat": (
        ENVELOPE + b"BDAT 4\r\nab\r\nBDAT 3 LAST\r\ncd\nQUIT\r\n",
        [*STARTED, "250 2.0.0 Ok: 4 bytes", "550 5.5.2 mx.test Error: bare <LF> received",
         "221 2.0.0 Bye"],
    ),
    "bdat-last": (
        ENVELOPE + b"BDAT 4\r\nab\r\nBDAT 0 LAST\r\n",
        [*STARTED, "250 2.0.0 Ok: 4 bytes", "250 2.0.0 Ok: 4 bytes queued as Q1"],
    ),
    "sequence": (
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nEHLO c.test\r\n"
        b"RCPT TO:<b@y.test>\r\nDATA\r\nMAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\n"
        b"DATA\r\nRCPT TO:<b@y.test>\r\nRSET\r\nDATA\r\n",
        [FIRST, FIRST, FIRST, *HELLO, NEED_MAIL, NEED_MAIL, "250 2.1.0 Ok",
         "503 5.5.1 Error: nested MAIL command", "554 5.5.1 Error: no valid recipients",
         RCPT_OK, OK, NEED_MAIL],
    ),
    "mixing": (
        ENVELOPE + b"BDAT 2\r\nabMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
        b"RSET\r\nBDAT 1 LAST\r\nx",
        [*STARTED, "250 2.0.0 Ok: 2 bytes", "503 5.5.1 Error: MAIL after BDAT",
         "503 5.5.1 Error: RCPT after BDAT", "503 5.5.1 Error: DATA after BDAT", OK, NEED_MAIL],
    ),
    "mail-syntax": (
        b"EHLO c.test\r\nMAIL FROM:a@x.test\r\nMAIL TO:<a@x.test>\r\n"
        b"MAIL FROM:<a@x.test>x\r\nMAIL FROM:<a@@x.test>\r\nMAIL FROM:<a@x.test> ENVID=1\r\n"
        b"MAIL FROM:<a@x.test> SIZE=52428801\r\nMAIL FROM:<a@x.test> SIZE=1x\r\n"
        b"MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nMAIL FROM:<a@x.test> SIZE=1 SIZE=2\r\n"
        b"MAIL FROM:<a@x.test> SMTPUTF8=yes\r\nMAIL FROM:<\xc3\xa9@x.test>\r\n"
        b"MAIL FROM:<a@x.test\r\nMAIL FROM: <@route.test:a@x.test> SIZE=52428800 "
        b"BODY=8bitmime SMTPUTF8\r\n",
        [*HELLO, MAIL_SYNTAX, MAIL_SYNTAX, MAIL_SYNTAX, "501 5.1.7 Bad sender address syntax",
         "555 5.5.4 Unsupported option: ENVID=1", "552 5.3.4 Message size exceeds fixed limit",
         "501 5.5.4 Bad message size syntax", "555 5.5.4 Unsupported option: BODY=BINARYMIME",
         "501 5.5.4 Error: duplicate SIZE parameter",
         "555 5.5.4 Unsupported option: SMTPUTF8=yes", NEED_UTF8, MAIL_SYNTAX, "250 2.1.0 Ok"],
    ),
    "rcpt-syntax": (
        b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<>\r\nRCPT TO:b@y.test\r\n"
        b"RCPT FROM:<b@y.test>\r\nRCPT TO:<b y@y.test>\r\nRCPT TO:<b@y.test> NOTIFY=NEVER\r\n"
        b"RCPT TO:<\xc3\xa9@y.test>\r\nRCPT TO:<b@\xc3\xa9.test>\r\nRCPT TO:<Postmaster>\r\n"
        b'RCPT TO:<"b y"@y.test>\r\nRCPT TO:<"b\\">"@y.test>\r\nRCPT TO:<@r.test>\r\n'
        b"RCPT TO:<@r.test,@s.test:b@y.test>\r\n",
        [*HELLO, "250 2.1.0 Ok", BAD_RCPT, RCPT_SYNTAX, RCPT_SYNTAX, BAD_RCPT,
         "555 5.5.4 Unsupported option: NOTIFY=NEVER", NEED_UTF8, NEED_UTF8, RCPT_OK, RCPT_OK,
         RCPT_OK, RCPT_SYNTAX, RCPT_OK],
    ),
    "other-commands": (
        b"EHLO\r\nHELO a b\r\nNOOP anything\r\nVRFY\r\nVRFY b\r\nHELP\r\nSTARTTLS\r\n"
        b"AUTH PLAIN AA==\r\nXYZZY\r\n\r\nRSET x\r\nRSET\r\nQUIT now\r\n"
        b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA x\r\nquit\r\n",
        ["501 5.5.4 Syntax: EHLO hostname", "501 5.5.4 Syntax: HELO hostname", OK,
         "501 5.5.4 Syntax: VRFY address",
         "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
         "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
         NOT_IMPLEMENTED, NOT_IMPLEMENTED, UNRECOGNIZED, UNRECOGNIZED, "501 5.5.4 Syntax: RSET",
         OK, "501 5.5.4 Syntax: QUIT", *STARTED, "501 5.5.4 Syntax: DATA", "221 2.0.0 Bye"],
    ),
    "smtputf8": (
        "EHLO c.test\r\nMAIL FROM:<é@x.test> SMTPUTF8\r\nRCPT TO:<ü@bücher.test>\r\n"
        "DATA\r\nSubject: é\r\n.\r\n".encode(),
        [*STARTED, GO, "250 2.0.0 Ok: queued as Q1"],
    ),
    "bad-bytes": (
        b"EHLO c.test\r\nNOOP \xff\r\nNOOP \x00\r\nNOOP \x7f\r\nNOOP\r\n",
        [*HELLO, "500 5.5.2 Error: bad UTF-8 syntax", "500 5.5.2 Error: bad syntax",
         "500 5.5.2 Error: bad syntax", OK],
    ),
    # Only a first word BDAT hangs up on a bad line (test_a_bad_bdat_line_ends_the_session).
    "bad-bytes-not-bdat": (
        b"EHLO c.test\r\nBDATE 1\t\r\nBDAT1\xff\r\nXBDAT 1\x00\r\nNOOP\r\n",
        [*HELLO, "500 5.5.2 Error: bad syntax", "500 5.5.2 Error: bad UTF-8 syntax",
         "500 5.5.2 Error: bad syntax", OK],
    ),
    # RFC 5321 4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">"; the route is checked, then ignored.
    "source-routes": (
        b"EHLO c.test\r\nMAIL FROM:<@relay.test:>\r\nMAIL FROM:<@@@ !!:a@x.test>\r\n"
        b"MAIL FROM:<@:a@x.test>\r\nMAIL FROM:<@[192.0.2.1]:a@x.test>\r\n"
        b"MAIL FROM:<@r.test,s.test:a@x.test>\r\nMAIL FROM:<@r.test,:a@x.test>\r\n"
        b"MAIL FROM:<@r.test,@s.test:a@x.test>\r\nRCPT TO:<@r.test:>\r\n"
        b"RCPT TO:<@r_t:b@y.test>\r\nRCPT TO:<@r.test:b@y.test>\r\nDATA\r\n.\r\n",
        [*HELLO, *[MAIL_SYNTAX] * 6, "250 2.1.0 Ok", RCPT_SYNTAX, RCPT_SYNTAX, RCPT_OK, GO,
         "250 2.0.0 Ok: queued as Q1"],
    ),
    "hello-syntax": (
        b"EHLO   \r\nHELO \r\nEHLO  c.test \r\n",
        ["501 5.5.4 Syntax: EHLO hostname", "501 5.5.4 Syntax: HELO hostname", *HELLO],
    ),
}  # fmt: skip


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_transcript(name: str, bytewise: bool) -> None:
    sent, expected = TRANSCRIPTS[name]
    assert replies(Peer().feed(sent, bytewise=bytewise)) == expected


def test_a_message_is_reported_with_its_envelope_and_content() -> None:
    peer = Peer()
    peer.feed(
        b"EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\n"
        b"RCPT TO:<postmaster>\r\nDATA\r\n.first\r\n..second\r\nthird.\r\n..\r\n.\r\n"
    )
    started, *_, received = peer.events
    expected = Envelope.build(
        "a@x.test", ["b@y.test", "postmaster@mx.test"], MailOptions(100, Body.EIGHT_BIT_MIME)
    )
    assert started == MessageStarted(expected)
    # RFC 5321 4.5.2: one leading period is removed from each line, the first one included.
    assert peer.content == b"first\r\n.second\r\nthird.\r\n.\r\n"
    assert received == MessageReceived(expected, len(peer.content), chunked=False)
    assert peer.server.client_name == "c.test"
    assert peer.server.state is ServerState.READY


def test_an_empty_message_and_the_null_sender() -> None:
    peer = Peer()
    peer.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n.\r\n")
    [received] = peer.received
    assert received.envelope.sender is None and received.size == 0 and peer.content == b""


def test_the_verdict_pauses_the_session_until_the_caller_gives_it() -> None:
    peer = Peer(verdict=lambda server, event: None)
    out = peer.feed(ENVELOPE + b"DATA\r\nx\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert replies(out)[-1].startswith("354")  # nothing after the dot is answered yet
    server = peer.server
    assert server.paused and server.state is ServerState.VERDICT
    server.receive_data(b"NOOP\r\n")  # buffered, not taken
    assert server.data_to_send() == b""
    server.refuse_message(451, "4.3.0", "disk full")
    assert replies(server.data_to_send()) == [
        "451 4.3.0 disk full", "250 2.0.0 Ok", "221 2.0.0 Bye",
    ]  # fmt: skip
    assert server.closed and isinstance(server.next_event(), SessionClosed)


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [(250, "2.0.0", "ok"), (451, "5.3.0", "x"), (554, "bad", "x"), (451, "4.3.0", "a\r\nb")],
)
def test_a_refusal_must_be_a_matching_failure(code: int, enhanced: str, text: str) -> None:
    peer = Peer(verdict=lambda server, event: None)
    peer.feed(ENVELOPE + b"DATA\r\nx\r\n.\r\n")
    with pytest.raises(LocalProtocolError):
        peer.server.refuse_message(code, enhanced, text)
    assert peer.server.paused  # unchanged


@pytest.mark.parametrize("queue_id", ["", "a b", "a\r\nb", "é"])
def test_a_queue_id_must_be_one_printable_word(queue_id: str) -> None:
    peer = Peer(verdict=lambda server, event: None)
    peer.feed(ENVELOPE + b"DATA\r\nx\r\n.\r\n")
    with pytest.raises(LocalProtocolError):
        peer.server.accept_message(queue_id)


def test_no_verdict_without_a_message() -> None:
    server = ServerConnection(ServerConfig(HOST))
    with pytest.raises(LocalProtocolError):
        server.accept_message("Q1")
    with pytest.raises(LocalProtocolError):
        server.refuse_message(451, "4.3.0", "no")


@pytest.mark.parametrize(
    "config",
    [
        {"host": "bad host"},
        {"host": "mx.test", "max_recipients": 99},
        {"host": "mx.test", "max_message_size": 0},
        {"host": "mx.test", "max_errors": 0},
        {"host": "mx.test", "recipient_overshoot": -1},
    ],
)
def test_config_is_checked(config: dict[str, object]) -> None:
    with pytest.raises((ParameterError, AddressError)):
        ServerConfig(**config)  # type: ignore[arg-type]


# -- bare CR and LF, and SMTP smuggling (CVE-2023-51764) ----------------------------------


@pytest.mark.parametrize(
    ("sent", "kind"),
    [
        (b"EHLO c.test\n", "LF"),
        (b"EHLO c.test\r\nNOOP\nNOOP\r\n", "LF"),
        (b"EHLO c\r.test\r\n", "CR"),
        (b"EHLO c.test\rMAIL FROM:<a@x.test>", "CR"),  # refused before any LF comes
        (b"\n", "LF"),
        (b"\r\r\n", "CR"),
    ],
)
@pytest.mark.parametrize("after", [b"", b"RSET\r\n"], ids=["alone", "followed"])
def test_a_bare_newline_in_a_command_is_refused_and_ends_the_session(
    sent: bytes, kind: str, after: bytes
) -> None:
    peer = Peer()
    out = peer.feed(sent + after)
    assert replies(out)[-1] == f"550 5.5.2 mx.test Error: bare <{kind}> received"
    assert "250 2.0.0 Ok" not in replies(out)  # nothing after it was taken
    assert peer.server.closed
    assert peer.events[-1] == SessionClosed(f"bare <{kind}> received")
    assert peer.feed(b"NOOP\r\n") == b""  # input after the end is ignored


SMUGGLED = b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n"
END_VARIANTS = [
    b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r", b"\r.\n",
    b"\n..\n", b"\r\n\n.\r\n",
]  # fmt: skip


def _bare_kind(data: bytes) -> str:
    return "LF" if data.count(b"\n") != data.count(b"\r\n") else "CR"


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("end", END_VARIANTS, ids=repr)
def test_no_smuggled_end_of_data_ends_the_data(end: bytes, bytewise: bool) -> None:
    peer = Peer()
    body = b"legit\r\n" + end + SMUGGLED + b".\r\n"
    out = peer.feed(ENVELOPE + b"DATA\r\n" + body + b"QUIT\r\n", bytewise=bytewise)
    lines = replies(out)
    after_354 = lines[lines.index("354 End data with <CR><LF>.<CR><LF>") + 1 :]
    # All of it was content, refused once the real CRLF.CRLF came: no command in it ran.
    kind = _bare_kind(end + SMUGGLED)
    assert after_354 == [f"550 5.5.2 mx.test Error: bare <{kind}> received", "221 2.0.0 Bye"]
    assert peer.received == [] and len(peer.of(MessageAborted)) == 1
    assert b"forged" not in peer.content


@pytest.mark.parametrize("end", END_VARIANTS, ids=repr)
def test_a_smuggling_attempt_without_a_real_end_submits_nothing(end: bytes) -> None:
    peer = Peer()
    peer.feed(ENVELOPE + b"DATA\r\nlegit\r\n" + end + SMUGGLED)
    peer.feed(b"")  # end of input
    assert peer.received == [] and peer.events[-1] == SessionClosed("end of input")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=10))
@example(b".\r\n", [])  # the data ends at once: what follows is commands, rightly
@example(b"a\n.\nb\r.\r", [3, 1, 1])
def test_arbitrary_content_never_runs_a_command(data: bytes, cuts: list[int]) -> None:
    peer = Peer()
    out = peer.feed(ENVELOPE + b"DATA\r\n")
    stream = data + SMUGGLED + b"\r\n.\r\n"
    for piece in _split(stream, cuts):
        out += peer.feed(piece)
    lines = replies(out)
    after_354 = lines[lines.index("354 End data with <CR><LF>.<CR><LF>") + 1 :]
    # Whatever the bytes, one message's worth of replies, and never one for a smuggled MAIL,
    # unless the data itself held a CRLF.CRLF (then what follows it is, rightly, commands).
    if (b"\r\n" + stream).find(b"\r\n.\r\n") == len(stream) - 3:
        assert len(after_354) == 1, after_354
        assert len(peer.received) + len(peer.of(MessageAborted)) == 1
    # What was taken is canonical, whatever came in.
    assert b"\r" not in peer.content.replace(b"\r\n", b"")
    assert b"\n" not in peer.content.replace(b"\r\n", b"")
    assert sum(received.size for received in peer.received) == len(peer.content)


def _split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    pos = 0
    for cut in cuts:
        if data[pos : pos + cut]:  # b"" would be the end of input
            yield data[pos : pos + cut]
        pos += cut
    if data[pos:]:
        yield data[pos:]


# -- round trips with the client's encoder -----------------------------------------------


def _canonical(data: bytes) -> bytes:
    encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.FOLD)
    return encoder.encode(data) + encoder.finish() if data else b""


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), max_size=12))
def test_data_round_trip_with_the_client_encoder(data: bytes, cuts: list[int]) -> None:
    encoder = BodyEncoder(dot_stuff=True, line_policy=LinePolicy.FOLD)
    wire = (encoder.encode(data) if data else b"") + encoder.finish()
    peer = Peer()
    peer.feed(ENVELOPE + b"DATA\r\n")
    for piece in _split(wire, cuts):
        peer.feed(piece)
    [received] = peer.received
    assert peer.content == _canonical(data)
    assert received.size == len(peer.content) and not received.chunked


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 700), max_size=8))
def test_bdat_round_trip_with_the_client_encoder(data: bytes, sizes: list[int]) -> None:
    wire = _canonical(data)
    commands = b""
    pos = 0
    for size in sizes:  # chunks cut anywhere, a CRLF split in two included
        chunk = wire[pos : pos + size]
        pos += len(chunk)
        commands += b"BDAT %d\r\n" % len(chunk) + chunk
    commands += b"BDAT %d LAST\r\n" % (len(wire) - pos) + wire[pos:]
    peer = Peer()
    peer.feed(ENVELOPE + commands)
    [received] = peer.received
    assert peer.content == wire and received.size == len(wire) and received.chunked


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
def test_the_client_core_delivers_to_the_server_core(chunking: bool) -> None:
    # The whole client (pipelining, BDAT or DATA, dot-stuffing) against this server in memory.
    bodies = [b".starts with a dot\n" * 500, b"x" * 2000 + b"\n", b"", b"\xc3\xa9\r\n.\r\n"]
    messages = [
        Message(Envelope.build("a@x.test", [f"r{i}@y.test", "s@y.test"]), body)
        for i, body in enumerate(bodies)
    ]
    client = ClientConnection(
        ClientConfig("c.test", chunking=chunking, line_policy=LinePolicy.FOLD)
    )
    driver = SessionDriver(client, messages)
    peer = Peer()
    incoming = GREETING
    for _ in range(100):
        client.receive_data(incoming)
        while (event := client.next_event()) is not None:
            driver.handle(event)
            if driver.streaming is not None:
                assert driver.send_stream()
        outgoing = client.data_to_send()
        if not outgoing:
            break
        incoming = peer.feed(outgoing)
    assert peer.server.closed
    assert [r.envelope for r in peer.received] == [m.envelope for m in messages]
    assert all(r.chunked is chunking for r in peer.received)
    assert [r.status for t in driver.results for r in t.recipients] == [Status.DELIVERED] * 8
    sizes = [r.size for r in peer.received]
    assert peer.content == b"".join(_canonical(b) for b in bodies)
    assert sizes == [len(_canonical(b)) for b in bodies]


# -- BDAT (RFC 3030) ------------------------------------------------------------------------


def test_a_refused_chunk_is_read_and_the_ones_after_it_discarded() -> None:
    peer = Peer()
    out = peer.feed(
        ENVELOPE + b"BDAT 3\r\na\nbBDAT 2\r\nxyBDAT 2 LAST\r\nzzMAIL FROM:<a@x.test>\r\n"
    )
    assert replies(out)[-4:] == [
        "550 5.5.2 mx.test Error: bare <LF> received",
        "554 5.5.0 Error: 2 octets discarded after an earlier error",
        "554 5.5.0 Error: 2 octets discarded after an earlier error",
        "250 2.1.0 Ok",  # LAST ended the failed transaction
    ]
    assert peer.received == [] and len(peer.of(MessageAborted)) == 1


def test_bdat_outside_a_transaction_skips_its_chunk() -> None:
    peer = Peer()
    out = peer.feed(
        b"BDAT 6\r\nNOOP\r\nEHLO c\r\nBDAT 6 LAST\r\nNOOP\r\nMAIL FROM:<>\r\nBDAT 4\r\nRSET"
    )
    assert replies(out) == [
        "503 5.5.1 Error: send HELO/EHLO first",
        *replies(EHLO),
        "503 5.5.1 Error: need MAIL command",
        "250 2.1.0 Ok",
        "554 5.5.1 Error: no valid recipients",
    ]
    assert peer.server.state is ServerState.CHUNKING  # failed: the client must RSET
    assert peer.events == []


@pytest.mark.parametrize(
    ("command", "reason"),
    [(b"BDAT x\r\n", "malformed BDAT"), (b"BDAT 1 LAST X\r\n", "malformed BDAT"),
     (b"BDAT 1 FIRST\r\n", "malformed BDAT"), (b"BDAT\r\n", "malformed BDAT"),
     (b"BDAT -1\r\n", "malformed BDAT")],
)  # fmt: skip
def test_a_bdat_without_a_size_ends_the_session(command: bytes, reason: str) -> None:
    peer = Peer()
    out = peer.feed(ENVELOPE + command + b"NOOP\r\n")
    assert replies(out)[-1] == "521 5.5.4 Syntax: BDAT count [LAST]"
    assert peer.server.closed and peer.events[-1] == SessionClosed(reason)


FORGED_CHUNK = b"RCPT TO:<attacker@evil.test>\r\nBDAT 8 LAST\r\nforged\r\n"
_LONG = b" " * MAX_COMMAND_LINE


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(
    "line",
    [
        b"BDAT %d LAST\t\r\n", b"BDAT\t%d LAST\r\n", b"BDAT %d LAST\x7f\r\n",
        b"BDAT %d\x00 LAST\r\n", "BDAT %d\u00a0LAST\r\n".encode(), b"BDAT %d LAST\xff\r\n",
        b"bdat %d last\t\r\n", b"BDAT\xc3\r\n", b" BDAT %d LAST\r\n", b"BDAT,%d LAST\r\n",
        b"BDAT %d LAST" + _LONG + b"\r\n", b"BDAT %d LAST" + _LONG, b"Bdat" + _LONG + b"\r\n",
    ],
    ids=["tab-end", "tab", "del", "nul", "nbsp", "utf-8", "lower", "utf-8-word",
         "leading-space", "comma", "long", "long-unended", "long-no-size"],
)  # fmt: skip
def test_a_bad_bdat_line_ends_the_session(line: bytes, bytewise: bool) -> None:
    # Refused with a 500, its chunk would run as commands: hang up as for a bad size.
    peer = Peer()
    sent = line.replace(b"%d", b"%d" % len(FORGED_CHUNK)) + FORGED_CHUNK
    out = peer.feed(ENVELOPE + sent, bytewise=bytewise)
    assert replies(out) == [*STARTED, "521 5.5.4 Syntax: BDAT count [LAST]"]
    assert peer.server.closed and peer.events == [SessionClosed("malformed BDAT")]


def test_bdat_content_without_a_final_crlf_gets_one_and_a_final_cr_is_refused() -> None:
    peer = Peer()
    peer.feed(ENVELOPE + b"BDAT 5 LAST\r\nab\r\nc")
    assert peer.content == b"ab\r\nc\r\n" and peer.received[0].size == 7
    peer = Peer()
    out = peer.feed(ENVELOPE + b"BDAT 3\r\nab\rBDAT 1 LAST\r\nc")
    assert replies(out)[-1] == "550 5.5.2 mx.test Error: bare <CR> received"
    peer = Peer()
    out = peer.feed(ENVELOPE + b"BDAT 3 LAST\r\nab\r")
    assert replies(out)[-1] == "550 5.5.2 mx.test Error: bare <CR> received"
    assert peer.server.state is ServerState.READY and peer.received == []


def test_rset_and_ehlo_and_quit_amid_chunks_abort_the_message() -> None:
    for command in (b"RSET\r\n", b"EHLO c\r\n", b"QUIT\r\n"):
        peer = Peer()
        peer.feed(ENVELOPE + b"BDAT 2\r\nab" + command + b"BDAT 1 LAST\r\nc")
        assert peer.received == []
        assert [type(e) for e in peer.events][:3] == [MessageStarted, MessageData, MessageAborted]


# -- limits ------------------------------------------------------------------------------


def test_command_line_limit() -> None:
    peer = Peer()
    longest = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 7) + b"\r\n"
    assert len(longest) == MAX_COMMAND_LINE
    out = peer.feed(longest + b"NOOP " + b"x" * (MAX_COMMAND_LINE - 6) + b"\r\nNOOP\r\n")
    assert replies(out) == ["250 2.0.0 Ok", "500 5.5.2 Error: line too long", "250 2.0.0 Ok"]


def test_an_endless_command_line_is_skipped_in_bounded_memory() -> None:
    peer = Peer()
    piece = b"A" * 65536
    tracemalloc.start()
    try:
        out = peer.feed(b"EHLO c\r\nNOOP ")
        for _ in range(160):  # 10 MiB, no LF
            out += peer.feed(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    out += peer.feed(b"\r\nNOOP\r\n")
    assert replies(out)[-2:] == ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]


def test_an_overlong_line_ending_in_a_bare_lf_still_ends_the_session() -> None:
    peer = Peer()
    out = peer.feed(b"x" * (MAX_COMMAND_LINE * 2) + b"\nRSET\r\n")
    assert replies(out) == [
        "500 5.5.2 Error: line too long", "550 5.5.2 mx.test Error: bare <LF> received",
    ]  # fmt: skip
    peer = Peer()
    out = peer.feed(b"x" * (MAX_COMMAND_LINE * 2))
    out += peer.feed(b"\nRSET\r\n")
    assert replies(out)[-1] == "550 5.5.2 mx.test Error: bare <LF> received"


def test_text_line_limit_counts_octets_after_unstuffing() -> None:
    longest = b"y" * (MAX_TEXT_LINE - 2)
    peer = Peer()
    out = peer.feed(ENVELOPE + b"DATA\r\n" + longest + b"\r\n." + longest + b"\r\n.\r\n")
    assert replies(out)[-1] == "250 2.0.0 Ok: queued as Q1"
    assert peer.content == longest + b"\r\n" + longest + b"\r\n"
    peer = Peer()
    out = peer.feed(ENVELOPE + b"DATA\r\nok\r\n" + longest + b"y\r\nmore\r\n.\r\nNOOP\r\n")
    assert replies(out)[-2:] == [
        "554 5.6.0 Error: message has a line over 1000 octets", "250 2.0.0 Ok",
    ]  # fmt: skip
    assert peer.received == [] and len(peer.of(MessageAborted)) == 1


def test_an_endless_text_line_is_dropped_in_bounded_memory() -> None:
    peer = Peer()
    out = peer.feed(ENVELOPE + b"DATA\r\nstart\r\n")
    tracemalloc.start()
    try:
        for _ in range(160):  # 10 MiB, no LF
            out += peer.feed(b"z" * 65536)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    out += peer.feed(b"\r\n.\r\n")
    assert replies(out)[-1] == "554 5.6.0 Error: message has a line over 1000 octets"
    assert peer.content == b"start\r\n"  # passed on before the long line, then aborted


def test_message_size_limit() -> None:
    config = ServerConfig(HOST, max_message_size=10)
    peer = Peer(config=config)
    out = peer.feed(b"EHLO c\r\nMAIL FROM:<> SIZE=11\r\nMAIL FROM:<> SIZE=10\r\n")
    assert replies(out)[-2:] == ["552 5.3.4 Message size exceeds fixed limit", "250 2.1.0 Ok"]
    out = peer.feed(b"RCPT TO:<b@y.test>\r\nDATA\r\n0123456789\r\n.\r\n")
    assert replies(out)[-1] == "552 5.3.4 Message size exceeds fixed limit"
    assert peer.received == [] and peer.of(MessageAborted)
    # The session goes on; exactly the limit is taken, and BDAT is refused before it is read.
    out = peer.feed(b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n01234567\r\n.\r\n")
    assert replies(out)[-1] == "250 2.0.0 Ok: queued as Q1"
    out = peer.feed(b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nBDAT 11 LAST\r\n0123456789\n")
    assert replies(out)[-1] == "552 5.3.4 Message size exceeds fixed limit"
    out = peer.feed(b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nBDAT 6\r\n01234\nBDAT 5 LAST\r\nabcde")
    assert replies(out)[-2:] == [
        "550 5.5.2 mx.test Error: bare <LF> received",
        "554 5.5.0 Error: 5 octets discarded after an earlier error",
    ]
    out = peer.feed(b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nBDAT 9\r\n012345678BDAT 0 LAST\r\n")
    assert replies(out)[-1] == "552 5.3.4 Message size exceeds fixed limit"  # the added CRLF
    assert len(peer.received) == 1


def test_recipient_limit() -> None:
    peer = Peer()
    rcpts = b"".join(b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(1001))
    out = peer.feed(b"EHLO c\r\nMAIL FROM:<>\r\n" + rcpts)
    assert replies(out).count("250 2.1.5 Ok") == 1000
    assert replies(out)[-1] == "452 4.5.3 Error: too many recipients"


def test_recipients_past_the_limit_are_not_errors_and_the_message_goes() -> None:
    # RFC 5321 4.5.3.1.10: the client sends the rest later; 452s are not its errors.
    peer = Peer()
    rcpts = b"".join(b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(1025))
    out = peer.feed(b"EHLO c\r\nMAIL FROM:<>\r\n" + rcpts + b"DATA\r\nx\r\n.\r\n")
    assert replies(out).count("452 4.5.3 Error: too many recipients") == 25
    assert replies(out)[-2:] == [GO, "250 2.0.0 Ok: queued as Q1"]
    [received] = peer.received
    assert len(received.envelope.recipients) == 1000
    assert str(received.envelope.recipients[-1].address) == "r999@y.test"


def test_recipients_past_the_overshoot_are_errors() -> None:
    peer = Peer(config=ServerConfig(HOST, max_recipients=100, recipient_overshoot=10))
    rcpts = [b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(200)]
    out = peer.feed(b"EHLO c\r\nMAIL FROM:<>\r\n" + b"".join(rcpts))
    # 100 taken, 10 overshoot, then 20 errors: 421 after the 130th.
    assert replies(out).count("452 4.5.3 Error: too many recipients") == 30
    assert replies(out)[-1] == "421 4.7.0 mx.test Error: too many errors"
    # Counted per transaction (a new MAIL starts again), as Postfix does: 3 x 5 errors.
    peer = Peer(config=ServerConfig(HOST, max_recipients=100, recipient_overshoot=10))
    transaction = b"MAIL FROM:<>\r\n" + b"".join(rcpts[:115]) + b"RSET\r\n"
    out = peer.feed(b"EHLO c\r\n" + transaction * 3)
    assert replies(out).count("452 4.5.3 Error: too many recipients") == 45
    assert not peer.server.closed


def test_too_many_errors_end_the_session() -> None:
    peer = Peer()
    out = peer.feed(b"XYZZY\r\n" * 19 + b"NOOP\r\nXYZZY\r\nNOOP\r\n")
    unknown = "500 5.5.2 Error: command not recognized"
    assert replies(out) == [
        *[unknown] * 19, "250 2.0.0 Ok", unknown, "421 4.7.0 mx.test Error: too many errors",
    ]  # fmt: skip
    assert peer.server.closed and peer.events == [SessionClosed("too many errors")]


def test_idle_commands_count_as_errors_past_the_junk_limit() -> None:
    peer = Peer()
    out = peer.feed(b"NOOP\r\n" * 100)
    assert replies(out) == ["250 2.0.0 Ok"] * 100 and not peer.server.closed
    out = peer.feed(b"NOOP\r\n" * 30)
    assert replies(out) == ["250 2.0.0 Ok"] * 20 + ["421 4.7.0 mx.test Error: too many errors"]


def test_empty_chunks_count_as_idle_commands() -> None:
    peer = Peer()
    out = peer.feed(ENVELOPE + b"BDAT 0\r\n" * 200)
    assert replies(out)[-1] == "421 4.7.0 mx.test Error: too many errors"
    # EHLO was the first idle command; the 421 answers the chunk that makes twenty errors.
    assert replies(out).count("250 2.0.0 Ok: 0 bytes") == 100 - 1 + 19
    assert peer.events[-2:] == [MessageAborted("too many errors"), SessionClosed("too many errors")]


def test_an_accepted_message_resets_the_counts() -> None:
    peer = Peer()
    peer.feed(b"XYZZY\r\n" * 19 + b"NOOP\r\n" * 99)
    peer.feed(ENVELOPE + b"DATA\r\nx\r\n.\r\n")
    out = peer.feed(b"XYZZY\r\n" * 19 + b"NOOP\r\n" * 90)
    assert not peer.server.closed and "421" not in out.decode()


def test_input_while_paused_is_bounded() -> None:
    peer = Peer(verdict=lambda server, event: None)
    peer.feed(ENVELOPE + b"DATA\r\nx\r\n.\r\n")
    peer.server.receive_data(b"N" * MAX_PAUSED_INPUT)
    with pytest.raises(LocalProtocolError):
        peer.server.receive_data(b"N")


# -- the end of input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        b"DATA\r\nhalf a message\r\n",
        b"DATA\r\nhalf a line",
        b"BDAT 10 LAST\r\nabc",
        b"BDAT 3\r\nabcBDAT 3 LAST\r\n",
    ],
)
def test_the_end_of_input_abandons_an_unfinished_message(sent: bytes) -> None:
    peer = Peer()
    peer.feed(ENVELOPE + sent)
    peer.feed(b"")
    assert peer.received == []
    assert peer.events[-2:] == [MessageAborted("end of input"), SessionClosed("end of input")]


def test_the_end_of_input_during_a_verdict_closes_after_it() -> None:
    peer = Peer(verdict=lambda server, event: None)
    peer.feed(ENVELOPE + b"DATA\r\nx\r\n.\r\nNOOP\r\n")
    peer.server.receive_data(b"")
    assert not peer.server.closed
    peer.server.accept_message("Q9")
    assert replies(peer.server.data_to_send()) == ["250 2.0.0 Ok: queued as Q9", "250 2.0.0 Ok"]
    assert peer.server.closed and peer.server.next_event() == SessionClosed("end of input")


# -- every (state, command) pair answers, in order, with a well-formed reply -------------

COMMANDS = [
    b"EHLO c.test", b"HELO c.test", b"MAIL FROM:<a@x.test>", b"MAIL FROM:<>", b"RCPT TO:<b@y.test>",
    b"RCPT TO:<>", b"DATA", b"BDAT 3", b"BDAT 2 LAST", b"BDAT 0 LAST", b"RSET", b"NOOP",
    b"VRFY b", b"HELP", b"STARTTLS", b"XYZZY", b"QUIT", b"MAIL FROM:<a@x.test> SIZE=99999999999",
]  # fmt: skip


@settings(max_examples=400)
@given(st.lists(st.sampled_from(COMMANDS), max_size=40), st.booleans())
def test_any_command_sequence_gets_one_reply_per_command_pipelined_or_not(
    commands: list[bytes], refuse: bool
) -> None:
    def verdict(server: ServerConnection, event: MessageReceived) -> None:
        if refuse:
            server.refuse_message(554, "5.7.1", "no")
        else:
            server.accept_message("Q")

    # In lockstep first: each command (with its chunk, or its content after a 354) gets one
    # well-formed reply, two with a 354, and a 421 may follow the twentieth error.
    lockstep = Peer(verdict=verdict)
    stream = b""
    said = b""
    for command in commands:
        if lockstep.server.closed:
            break
        sent = command + b"\r\n"
        if command.startswith(b"BDAT"):
            sent += b"x" * int(command.split()[1])
        out = lockstep.feed(sent)
        found = _parse(out)
        if found and found[-1].code == 354:
            sent += b"line\r\n.\r\n"
            out += lockstep.feed(b"line\r\n.\r\n")
            found = _parse(out)
        expected = 1 + (found[0].code == 354) + (found[-1].code == 421)
        assert len(found) == expected, (command, found)
        for reply in found:
            if reply.code not in (220, 354) and not (reply.code == 250 and "Ok" not in reply.text):
                assert reply.enhanced is not None and reply.enhanced.klass == reply.code // 100
        stream += sent
        said += out
    # Pipelined, all in one write, the replies are the same, in the same order (RFC 2920).
    pipelined = Peer(verdict=verdict)
    assert (pipelined.feed(stream) if stream else b"") == said
    assert [type(e) for e in pipelined.events] == [type(e) for e in lockstep.events]
    # Events nest: started, data..., then received or aborted.
    open_message = False
    for event in lockstep.events:
        if isinstance(event, MessageStarted):
            assert not open_message
            open_message = True
        elif isinstance(event, MessageData):
            assert open_message
        elif isinstance(event, MessageReceived | MessageAborted):
            assert open_message
            open_message = False


def _parse(out: bytes) -> list[Reply]:
    parser = ReplyParser()
    parser.enhanced_status_codes = True
    parser.feed(out)
    found = []
    while (reply := parser.next_reply()) is not None:
        found.append(reply)
    assert parser.pending == 0
    return found
