"""Less travelled paths: traces, BDAT without pipelining, refusals, driver policies."""

from __future__ import annotations

import base64

import pytest

from mxsend.protocol import (
    AuthenticationError,
    Body,
    BodyRequested,
    Capabilities,
    ClientConfig,
    ClientConnection,
    CramMD5,
    Envelope,
    LocalProtocolError,
    MailOptions,
    Message,
    Plain,
    RemoteProtocolError,
    Reply,
    ReplyParser,
    Ret,
    ScramSHA256,
    SessionDriver,
    State,
    Status,
    TransactionCompleted,
    XOAuth2,
    scan_body,
)
from mxsend.protocol._auth import saslprep
from mxsend.protocol._commands import Command, Verb
from mxsend.testing import FakeServer, converse
from tests.core.test_connection import ENVELOPE, connect, drain


def run(
    server: FakeServer, messages: list[Message], **kwargs: object
) -> tuple[ClientConnection, SessionDriver, list[str]]:
    trace: list[str] = []
    config = kwargs.pop("config", ClientConfig("client.example"))
    conn = ClientConnection(config, trace=lambda d, line: trace.append(f"{d}: {line}"))  # type: ignore[arg-type]
    driver = SessionDriver(conn, messages, **kwargs)  # type: ignore[arg-type]
    converse(conn, server, driver.handle)
    return conn, driver, trace


def msg(content: bytes = b"hi\n", **options: object) -> Message:
    return Message(
        Envelope.build("a@example.com", ["b@example.net"], MailOptions(**options)), content
    )  # type: ignore[arg-type]


def test_trace_redacts_credentials_and_summarises_content() -> None:
    server = FakeServer(credentials=("alice", "secret"), extensions=("AUTH PLAIN", "SIZE 1000"))
    config = ClientConfig("client.example", implicit_tls=True)
    _, driver, trace = run(server, [msg(size=4)], config=config, mechanism=Plain("alice", "secret"))
    assert "C: AUTH PLAIN <redacted>" in trace
    assert not any("c2VjcmV0" in line or "secret" in line for line in trace)
    assert "C: <4 octets of message content>" in trace
    assert "C: MAIL FROM:<a@example.com> SIZE=4" in trace
    assert driver.results[0].recipients[0].status is Status.DELIVERED


def test_bdat_without_pipelining_sends_one_chunk_at_a_time() -> None:
    server = FakeServer(extensions=("CHUNKING",))
    conn = ClientConnection(ClientConfig("client.example"))
    conn.receive_data(server.greeting())
    drain(conn)
    conn.receive_data(server.receive(conn.data_to_send()))
    drain(conn)
    conn.begin_transaction(ENVELOPE)
    [requested] = drain(conn)
    assert isinstance(requested, BodyRequested)
    for part in (b"one\n", b"two\n", b"three\n"):
        conn.send_body(part)
    conn.end_body()
    writes = []
    while out := conn.data_to_send():
        writes.append(out)
        conn.receive_data(server.receive(out))
        drain(conn)
    assert writes[0] == b"MAIL FROM:<alice@example.com>\r\n"
    assert writes[-1] == b"BDAT 7 LAST\r\nthree\r\n"
    assert server.messages[0].content == b"one\r\ntwo\r\nthree\r\n"


def test_bdat_refused_recipients_discard_content() -> None:
    server = FakeServer(
        extensions=("CHUNKING", "PIPELINING"),
        replies={"bob@example.net": "550 no", "carol@example.net": "550 no"},
    )
    _, driver, _ = run(server, [Message(ENVELOPE, b"x" * 10)])
    assert [r.status for r in driver.results[0].recipients] == [Status.FAILED] * 2
    assert server.messages == []


def test_body_after_failure_is_discarded() -> None:
    conn = connect(["CHUNKING"])
    conn.begin_transaction(ENVELOPE)
    drain(conn)
    conn.data_to_send()
    conn.receive_data(b"550 sender refused\r\n")
    assert drain(conn) == []
    conn.send_body(b"ignored\n")
    conn.send_body(b"")
    conn.end_body()
    [done] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert conn.data_to_send() == b"" and conn.state is State.READY


def test_parameters_and_drops() -> None:
    conn = connect(
        ["DSN", "8BITMIME", "REQUIRETLS", "SIZE"], ClientConfig("c.example", implicit_tls=True)
    )
    options = MailOptions(
        size=5, body=Body.EIGHT_BIT_MIME, ret=Ret.FULL, envid="e1", requiretls=True
    )
    conn.begin_transaction(Envelope.build("a@example.com", ["b@example.net"], options))
    assert conn.data_to_send().startswith(
        b"MAIL FROM:<a@example.com> SIZE=5 BODY=8BITMIME RET=FULL ENVID=e1 REQUIRETLS\r\n"
    )
    bare = connect([])
    bare.begin_transaction(
        Envelope.build(
            None, ["b@example.net"], MailOptions(size=5, body=Body.SEVEN_BIT, ret=Ret.HDRS)
        )
    )
    assert bare.data_to_send() == b"MAIL FROM:<>\r\n"
    for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):  # no PIPELINING: in turn
        bare.receive_data(reply)
        drain(bare)
        bare.data_to_send()
    bare.send_body(b"x")
    bare.end_body()
    bare.data_to_send()
    bare.receive_data(b"250 ok\r\n")
    [done] = drain(bare)
    assert isinstance(done, TransactionCompleted)
    assert done.result.dropped == (
        "BODY=7BIT",
        "DSN parameters (RET, ENVID, NOTIFY, ORCPT): server lacks DSN",
    )


def test_starttls_refused_and_tls_policies() -> None:
    conn = connect(["STARTTLS"])
    conn.start_tls()
    conn.data_to_send()
    conn.receive_data(b"454 4.7.0 TLS not available\r\n")
    assert type(conn.next_event()).__name__ == "TLSRefused"
    assert conn.state is State.READY and not conn.encrypted
    tls = connect([], ClientConfig("c.example", implicit_tls=True))
    with pytest.raises(LocalProtocolError):
        tls.start_tls()


def test_driver_require_tls_without_starttls_quits() -> None:
    server = FakeServer(extensions=())
    _, driver, _ = run(server, [msg()], require_tls=True)
    assert driver.tls_failed is not None and driver.tls_failed.code == 451
    assert len(driver.unsent) == 1 and server.messages == []


def test_driver_require_tls_refused_quits() -> None:
    server = FakeServer(extensions=("STARTTLS",))
    conn = ClientConnection(ClientConfig("client.example"))
    driver = SessionDriver(conn, [msg()], require_tls=True)
    incoming = server.greeting()
    for _ in range(10):
        conn.receive_data(incoming)
        while (event := conn.next_event()) is not None:
            driver.handle(event)
        out = conn.data_to_send()
        if not out:
            break
        incoming = b"454 4.7.0 no TLS today\r\n" if out == b"STARTTLS\r\n" else server.receive(out)
    assert driver.tls_failed is not None and driver.tls_failed.code == 451
    assert "454 4.7.0 no TLS today" in driver.tls_failed.text


def test_driver_opportunistic_tls_refused_goes_on() -> None:
    conn = connect(["STARTTLS", "AUTH PLAIN"], ClientConfig("c.example", allow_cleartext_auth=True))
    driver = SessionDriver(conn, [], mechanism=Plain("u", "p"))
    conn.start_tls()
    conn.data_to_send()
    conn.receive_data(b"502 no\r\n")
    for event in drain(conn):
        driver.handle(event)
    assert conn.data_to_send().startswith(b"AUTH PLAIN")


def test_driver_records_local_refusals() -> None:
    server = FakeServer(extensions=("SIZE 10",))
    _, driver, _ = run(server, [msg(size=100), msg(size=3)])
    first, second = driver.results
    assert first.recipients[0].reply.code == 552 and first.recipients[0].status is Status.FAILED
    assert second.recipients[0].status is Status.DELIVERED


def test_driver_without_kept_results_passes_each_on() -> None:
    server = FakeServer(extensions=("SIZE 10",))
    seen: list[tuple[int, Status]] = []
    _, driver, _ = run(
        server,
        [msg(size=3), msg(size=100), msg(size=3)],
        on_result=lambda position, result: seen.append((position, result.recipients[0].status)),
        keep_results=False,
    )
    # In the order decided: the refusal before any reply, the first message's after it.
    assert seen == [(1, Status.FAILED), (0, Status.DELIVERED), (2, Status.DELIVERED)]
    assert driver.results == [] and driver.positions == []


def test_auth_protocol_errors() -> None:
    conn = connect(["AUTH PLAIN"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(Plain("u", "p"))
    conn.receive_data(b"334 !!notbase64\r\n")
    with pytest.raises(RemoteProtocolError):
        drain(conn)
    conn = connect(["AUTH PLAIN"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(Plain("u", "p"))
    conn.receive_data(b"250 what\r\n")
    with pytest.raises(RemoteProtocolError):
        drain(conn)
    conn = connect(["AUTH PLAIN"], ClientConfig("c.example", implicit_tls=True))
    with pytest.raises(LocalProtocolError):
        conn.authenticate(CramMD5("u", "p"))


def test_mechanism_misuse() -> None:
    plain = Plain("u", "p")
    assert plain.respond(b"") == b"\0u\0p"
    with pytest.raises(AuthenticationError):
        plain.respond(b"")
    cram = CramMD5("u", "p")
    with pytest.raises(AuthenticationError):
        cram.respond(b"")
    oauth = XOAuth2("u", "t")
    assert oauth.respond(b"{}") == b""
    with pytest.raises(AuthenticationError):
        oauth.respond(b"{}")


@pytest.mark.parametrize(
    "server_first",
    [
        b"m=ext,r=abcdef,s=c2FsdA==,i=4096",
        b"r=other,s=c2FsdA==,i=4096",
        b"r=abc,s=c2FsdA==,i=4096",
        b"r=abcdef,i=4096",
        b"r=abcdef,s=c2FsdA==,i=12",
        b"r=abcdef,s=c2FsdA==,i=99999999",
        b"r=abcdef,s=!!,i=4096",
        b"\xff\xfe",
        b"garbage",
    ],
)
def test_scram_rejects_bad_server_first(server_first: bytes) -> None:
    with pytest.raises(AuthenticationError):
        ScramSHA256("u", "p", nonce="abc").respond(server_first)


def test_scram_server_error_and_replay() -> None:
    scram = ScramSHA256("u", "p", nonce="abc")
    scram.respond(b"r=abcdef,s=c2FsdA==,i=4096")
    with pytest.raises(AuthenticationError):
        scram.respond(b"e=invalid-proof")
    scram = ScramSHA256("u", "p", nonce="abc")
    scram.respond(b"r=abcdef,s=c2FsdA==,i=4096")
    with pytest.raises(AuthenticationError):
        scram.respond(b"v=!!")
    random = ScramSHA256("u,=x", "p", random_bytes=lambda n: b"\x01" * n)
    assert random.initial_response() == b"n,,n=u=2C=3Dx,r=" + base64.b64encode(b"\x01" * 18)


def test_saslprep() -> None:
    assert saslprep("I\u00adX") == "IX"  # soft hyphen maps to nothing
    assert saslprep("user") == "user"
    assert saslprep("\u00aa") == "a"
    assert saslprep("x\u2000y") == "x y"
    for bad in ("\u0007", "\u0627\u0031"):
        with pytest.raises(ValueError):
            saslprep(bad)


def test_capabilities_parsing() -> None:
    reply = Reply(
        250,
        ("mx", "size", "AUTH=LOGIN", "auth plain", "", "BAD!KEYWORD", "X-EXT a b", "SIZE abc"),
    )
    caps = Capabilities.from_ehlo(reply)
    assert caps.auth_mechanisms == {"LOGIN", "PLAIN"}
    assert "x-ext" in caps and "BAD!KEYWORD" not in caps and 42 not in caps
    assert caps.size is None
    assert Capabilities.from_ehlo(Reply(250, ("mx", "SIZE 0"))).size is None


def test_command_rendering_guards() -> None:
    with pytest.raises(LocalProtocolError):
        Command(Verb.MAIL, "FROM:<a@b>", ("X=\r\n",)).to_bytes()
    with pytest.raises(LocalProtocolError):
        Command(Verb.RCPT, "TO:<" + "a" * 3000 + ">").to_bytes()
    assert Command(Verb.AUTH, "", ("abc",), sensitive=True).for_trace() == "<redacted>"


def test_parser_pending_counts_partial_reply() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n250")
    assert parser.next_reply() is None
    assert parser.pending == len(b"250-first\r\n250")


def test_ehlo_refused_after_tls_does_not_fall_back() -> None:
    conn = ClientConnection(ClientConfig("client.example", implicit_tls=True))
    conn.receive_data(b"220 mx\r\n")
    drain(conn)
    conn.data_to_send()
    conn.receive_data(b"500 no\r\n")
    assert type(conn.next_event()).__name__ == "SessionRefused"
    helo = ClientConnection(ClientConfig("client.example"))
    for reply in (b"220 mx\r\n", b"500 no\r\n"):
        helo.receive_data(reply)
        drain(helo)
        helo.data_to_send()
    helo.receive_data(b"501 no helo either\r\n")
    assert type(helo.next_event()).__name__ == "SessionRefused"


def test_more_than_max_auth_rounds_aborts() -> None:
    class Chatty:
        name = "PLAIN"

        def initial_response(self) -> bytes | None:
            return None

        def respond(self, challenge: bytes) -> bytes:
            return b"more"

        def succeeded(self) -> None:
            return None

    conn = connect(["AUTH PLAIN"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(Chatty())
    conn.receive_data(b"334 \r\n" * 9)
    with pytest.raises(RemoteProtocolError):
        drain(conn)
    assert conn.capabilities.auth_mechanisms == {"PLAIN"}


def test_long_line_message_is_refused_alone_before_its_transaction() -> None:
    server = FakeServer()
    long_line = b"Subject: x\n\n" + b"y" * 999 + b"\n"
    _, driver, _ = run(server, [msg(content=long_line), msg(), msg(content=b"z" * 998 + b"\r\n")])
    first, second, third = driver.results
    assert first.recipients[0].status is Status.FAILED
    assert (first.recipients[0].reply.code, str(first.recipients[0].reply.enhanced)) == (
        554,
        "5.6.0",
    )
    assert second.recipients[0].status is third.recipients[0].status is Status.DELIVERED
    assert len(server.messages) == 2  # nothing of the long one went out


@pytest.mark.parametrize(
    "data", [b"", b"a\rb", b"x" * 998, b"x" * 999, b"a\r\n" + b"b" * 999, b"\n" * 5]
)
def test_has_long_line_agrees_with_the_encoder(data: bytes) -> None:
    from mxsend.protocol._encoder import has_long_line

    assert has_long_line(data) == (scan_body(data).long_lines > 0)
