"""Connection behaviour beyond the golden transcripts, security cases first."""

from __future__ import annotations

import pytest

from mxsend.protocol import (
    AuthenticationError,
    BodyEncoder,
    BodyRequested,
    BodySent,
    CleartextAuthError,
    ClientConfig,
    ClientConnection,
    Closed,
    Envelope,
    Event,
    ExtensionRequiredError,
    LineTooLongError,
    LocalProtocolError,
    MailOptions,
    MessageTooLargeError,
    Plain,
    RemoteProtocolError,
    ResponseInjectionError,
    ScramSHA256,
    State,
    Status,
    TransactionCompleted,
    TransactionResult,
)
from mxsend.protocol._session import Message, SessionDriver
from mxsend.testing import FakeServer, converse

EHLO = b"220 mx ESMTP\r\n"


def connect(ehlo_lines: list[str], config: ClientConfig | None = None) -> ClientConnection:
    conn = ClientConnection(config or ClientConfig("client.example"))
    conn.receive_data(EHLO)
    assert conn.next_event() is not None
    conn.data_to_send()
    lines = ["mx", *ehlo_lines]
    reply = "".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n" for i, t in enumerate(lines))
    conn.receive_data(reply.encode())
    assert conn.next_event() is not None
    assert conn.state is State.READY
    return conn


def drain(conn: ClientConnection) -> list[Event]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


ENVELOPE = Envelope.build("alice@example.com", ["bob@example.net", "carol@example.net"])


@pytest.mark.parametrize(
    "injected", [b"250-x\r\n250 AUTH PLAIN\r\n", b"250-x\r\n250 AUTH PLAIN", b"2"]
)
def test_starttls_response_injection_aborts(injected: bytes) -> None:
    conn = connect(["STARTTLS"])
    conn.start_tls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    conn.receive_data(b"220 go\r\n" + injected)
    with pytest.raises(ResponseInjectionError):
        drain(conn)
    assert conn.state is State.ERROR
    assert conn.data_to_send() == b""


def test_bytes_arriving_before_tls_starts_abort() -> None:
    conn = connect(["STARTTLS"])
    conn.start_tls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    conn.receive_data(b"220 go\r\n")
    assert type(drain(conn)[0]).__name__ == "TLSRequested"
    conn.receive_data(b"250 forged\r\n")
    with pytest.raises(ResponseInjectionError):
        conn.next_event()


def test_auth_refused_on_cleartext_channel() -> None:
    conn = connect(["AUTH PLAIN LOGIN"])
    with pytest.raises(CleartextAuthError):
        conn.authenticate(Plain("alice", "secret"))
    assert conn.data_to_send() == b"" and conn.state is State.READY


def test_cleartext_auth_when_explicitly_allowed() -> None:
    conn = connect(["AUTH PLAIN"], ClientConfig("client.example", allow_cleartext_auth=True))
    conn.authenticate(Plain("alice", "secret"))
    assert conn.data_to_send().startswith(b"AUTH PLAIN ")


def test_scram_server_signature_must_verify() -> None:
    conn = connect(["AUTH SCRAM-SHA-256"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(ScramSHA256("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO"))
    import base64

    first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    conn.data_to_send()  # the commands go out before their replies come in
    conn.receive_data(b"334 " + base64.b64encode(first) + b"\r\n")
    assert drain(conn) == []
    forged = base64.b64encode(b"v=" + base64.b64encode(b"x" * 32))
    conn.data_to_send()  # the commands go out before their replies come in
    conn.receive_data(b"334 " + forged + b"\r\n")
    with pytest.raises(AuthenticationError):
        drain(conn)


def test_scram_success_without_server_proof_is_refused() -> None:
    conn = connect(["AUTH SCRAM-SHA-256"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(ScramSHA256("user", "pencil"))
    conn.data_to_send()  # the commands go out before their replies come in
    conn.receive_data(b"235 ok\r\n")
    with pytest.raises(AuthenticationError):
        drain(conn)


def test_unexpected_extra_challenge_aborts() -> None:
    from mxsend.protocol import Login

    conn = connect(["AUTH LOGIN"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(Login("u", "p"))
    for _ in range(2):  # username, password
        conn.data_to_send()
        conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
        drain(conn)
    conn.data_to_send()
    conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
    with pytest.raises(AuthenticationError):
        drain(conn)


def test_two_challenges_in_one_read_abort() -> None:
    from mxsend.protocol import Login

    conn = connect(["AUTH LOGIN"], ClientConfig("c.example", implicit_tls=True))
    conn.authenticate(Login("u", "p"))
    conn.data_to_send()
    # The second challenge arrived before the answer to the first was sent.
    conn.receive_data(b"334 VXNlcm5hbWU6\r\n" * 2)
    with pytest.raises(RemoteProtocolError, match="no command outstanding"):
        drain(conn)
    assert conn.state is State.ERROR and conn.data_to_send() == b""


def test_reply_with_nothing_outstanding_is_an_error() -> None:
    conn = connect([])
    conn.receive_data(b"250 surprise\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(RemoteProtocolError):
        conn.next_event()  # stays in error


def test_unsolicited_421_closes() -> None:
    conn = connect([])
    conn.receive_data(b"421 4.3.2 going down\r\n")
    assert type(conn.next_event()).__name__ == "ServerClosing"
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("reply", [b"250 ok\r\n", b"334 what\r\n", b"235 ok\r\n"])
def test_anything_but_354_to_data_aborts(reply: bytes) -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n" + reply)
    with pytest.raises(RemoteProtocolError):
        drain(conn)


def test_unexpected_intermediate_reply_to_rcpt_aborts() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.receive_data(b"250 ok\r\n354 go\r\n")
    with pytest.raises(RemoteProtocolError):
        drain(conn)


def test_pipelined_group_is_one_write() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    assert conn.data_to_send() == (
        b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\n"
        b"RCPT TO:<carol@example.net>\r\nDATA\r\n"
    )


def test_connection_lost_after_final_dot_is_outcome_unknown() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.data_to_send()  # the commands go out before their replies come in
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n")
    assert isinstance(drain(conn)[-1], BodyRequested)
    conn.send_body(b"hello\r\n")
    conn.end_body()
    assert conn.data_to_send().endswith(b"\r\n.\r\n")  # the dot went out
    conn.receive_data(b"")
    events = drain(conn)
    assert isinstance(events[0], TransactionCompleted) and isinstance(events[-1], Closed)
    bob, carol = events[0].result.recipients
    assert bob.status is Status.DEFERRED and bob.outcome_unknown and bob.reply.code == 451
    assert carol.status is Status.FAILED and not carol.outcome_unknown


def test_connection_lost_before_data_is_plain_deferral() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.data_to_send()  # the commands go out before their replies come in
    conn.receive_data(b"250 ok\r\n")
    drain(conn)
    conn.connection_lost("timed out")
    [done, _] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert all(
        r.status is Status.DEFERRED and not r.outcome_unknown for r in done.result.recipients
    )
    assert done.result.recipients[0].reply.lines == ("4.4.2 timed out",)


def test_all_recipients_refused_then_rset_before_next_mail() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n550 no\r\n550 no\r\n554 no valid recipients\r\n")
    [done] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert [r.reply.code for r in done.result.recipients] == [550, 550]
    conn.begin_transaction(ENVELOPE)
    assert conn.data_to_send().startswith(b"RSET\r\nMAIL FROM:")


def test_354_after_every_recipient_refused_sends_only_the_dot() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n550 no\r\n550 no\r\n354 go\r\n")
    assert drain(conn) == []
    assert conn.data_to_send() == b".\r\n"
    conn.receive_data(b"554 nothing\r\n")
    [done] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert [r.status for r in done.result.recipients] == [Status.FAILED, Status.FAILED]


def test_session_waits_for_data_reply_before_next_transaction() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.data_to_send()  # the commands go out before their replies come in
    conn.receive_data(b"550 sender refused\r\n")
    assert drain(conn) == []
    assert conn.state is State.MAIL  # DATA's reply is still due: nothing may follow it yet
    with pytest.raises(LocalProtocolError):
        conn.begin_transaction(ENVELOPE)


def test_mail_refused_without_pipelining_sends_nothing_more() -> None:
    conn = connect([])
    conn.begin_transaction(ENVELOPE)
    assert conn.data_to_send() == b"MAIL FROM:<alice@example.com>\r\n"
    conn.receive_data(b"451 4.7.1 greylisted\r\n")
    [done] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert [r.reply.code for r in done.result.recipients] == [451, 451]
    assert conn.data_to_send() == b"" and conn.state is State.READY


def test_required_extensions_refuse_before_sending() -> None:
    conn = connect(["SIZE 100"])
    utf8 = Envelope.build("jösé@example.com", ["bob@example.net"])
    with pytest.raises(ExtensionRequiredError) as caught:
        conn.begin_transaction(utf8)
    assert (caught.value.reply.code, str(caught.value.reply.enhanced)) == (553, "5.6.7")
    big = Envelope.build("a@example.com", ["b@example.net"], MailOptions(size=101))
    with pytest.raises(MessageTooLargeError):
        conn.begin_transaction(big)
    from mxsend.protocol import Body

    eight = Envelope.build(
        "a@example.com", ["b@example.net"], MailOptions(body=Body.EIGHT_BIT_MIME)
    )
    with pytest.raises(ExtensionRequiredError):
        conn.begin_transaction(eight)
    tls = Envelope.build("a@example.com", ["b@example.net"], MailOptions(requiretls=True))
    with pytest.raises(ExtensionRequiredError):
        conn.begin_transaction(tls)
    dsn = Envelope.build(
        "a@example.com", ["b@example.net"], MailOptions(envid="x", require_dsn=True)
    )
    with pytest.raises(ExtensionRequiredError):
        conn.begin_transaction(dsn)
    assert conn.data_to_send() == b"" and conn.state is State.READY


def test_wrong_state_calls_change_nothing() -> None:
    conn = ClientConnection(ClientConfig("client.example"))
    for action in (conn.quit, conn.start_tls, conn.end_body, conn.noop, conn.reset):
        with pytest.raises(LocalProtocolError):
            action()
    with pytest.raises(LocalProtocolError):
        conn.send_body(b"x")
    with pytest.raises(LocalProtocolError):
        conn.tls_established()
    assert conn.state is State.GREETING and conn.data_to_send() == b""


def test_greeting_refused_sends_quit() -> None:
    conn = ClientConnection(ClientConfig("client.example"))
    conn.receive_data(b"554 5.7.1 go away\r\n")
    assert type(conn.next_event()).__name__ == "SessionRefused"
    assert conn.data_to_send() == b"QUIT\r\n"
    conn.receive_data(b"221 bye\r\n")
    assert isinstance(conn.next_event(), Closed)


def test_ehlo_4xx_is_refusal_not_fallback() -> None:
    conn = ClientConnection(ClientConfig("client.example"))
    conn.receive_data(EHLO)
    drain(conn)
    conn.data_to_send()
    conn.receive_data(b"451 try later\r\n")
    assert type(conn.next_event()).__name__ == "SessionRefused"
    assert conn.data_to_send() == b"QUIT\r\n"


def test_many_transactions_against_fake_server() -> None:
    server = FakeServer(replies={"gone@example.net": "550 5.1.1 gone"})
    conn = ClientConnection(ClientConfig("client.example"))
    messages = [
        Message(Envelope.build("a@example.com", [f"r{i}@example.net", "gone@example.net"]), b"x\n")
        for i in range(5)
    ]
    driver = SessionDriver(conn, messages)
    converse(conn, server, driver.handle)
    assert len(server.messages) == 5 and len(driver.results) == 5
    assert conn.state is State.CLOSED
    for result in driver.results:
        assert [r.status for r in result.recipients] == [Status.DELIVERED, Status.FAILED]


def test_noop_and_rset_when_idle() -> None:
    conn = connect([])
    assert conn.idle
    conn.noop()
    conn.reset()
    assert conn.data_to_send() == b"NOOP\r\n"  # one at a time without PIPELINING
    conn.receive_data(b"250 ok\r\n")
    drain(conn)
    assert conn.data_to_send() == b"RSET\r\n"


def test_after_a_protocol_error_no_reply_decides_an_outcome() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE)
    conn.data_to_send()
    # MAIL ok, then a 503 that was really DATA's answer, then a 250 to "DATA": out of step.
    conn.receive_data(b"250 ok\r\n503 need RCPT\r\n550 no\r\n250 ok\r\n")
    with pytest.raises(RemoteProtocolError):
        drain(conn)
    conn.connection_lost("protocol error")
    [done, _] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert [r.status for r in done.result.recipients] == [Status.DEFERRED, Status.DEFERRED]


# -- content given with the transaction ---------------------------------------------------

SMUGGLING = b"Subject: s\n\n.\nline\r.\r\nMAIL FROM:<x@y>\r\n\n.\r\n.."


def completed(conn: ClientConnection, replies: bytes) -> TransactionResult:
    conn.receive_data(replies)
    [done] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    return done.result


def test_content_with_the_transaction_waits_for_354_and_is_encoded() -> None:
    conn = connect(["PIPELINING", "8BITMIME"])
    conn.begin_transaction(ENVELOPE, SMUGGLING)
    # RFC 2920: DATA ends the group; not one byte of content before the 354.
    assert conn.data_to_send().endswith(b"DATA\r\n")
    assert conn.state is State.MAIL
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [type(e) for e in drain(conn)] == [BodySent]
    encoder = BodyEncoder()
    expected = encoder.encode(SMUGGLING) + encoder.finish()
    assert conn.data_to_send() == expected
    # Every line end is CRLF, every leading dot doubled: no end of data but the last.
    assert expected.count(b"\r\n.\r\n") == 1 and expected.endswith(b"\r\n.\r\n")
    bare = expected.replace(b"\r\n", b"")
    assert b"\r" not in bare and b"\n" not in bare
    assert conn.state is State.READY
    result = completed(conn, b"250 queued\r\n")
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 2


def test_content_with_the_transaction_is_not_sent_when_every_rcpt_fails() -> None:
    conn = connect(["PIPELINING"])
    conn.begin_transaction(ENVELOPE, b"Subject: no\n\nsecret\n")
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n550 no\r\n550 no\r\n354 go\r\n")
    assert drain(conn) == []
    # RFC 2920 3.1: DATA was accepted though no RCPT was; the data is ended empty.
    assert conn.data_to_send() == b".\r\n"
    result = completed(conn, b"554 no valid recipients\r\n")
    assert [r.reply.code for r in result.recipients] == [550, 550]
    assert conn.state is State.READY


def test_content_with_the_transaction_goes_as_one_bdat_last() -> None:
    conn = connect(["PIPELINING", "CHUNKING"])
    conn.begin_transaction(ENVELOPE, b"Subject: b\n\n.x\n")
    [sent] = drain(conn)
    assert isinstance(sent, BodySent) and conn.state is State.READY
    out = conn.data_to_send()
    # No dot-stuffing with BDAT (RFC 3030), line ends made canonical, size exact.
    assert out.endswith(b"BDAT 18 LAST\r\nSubject: b\r\n\r\n.x\r\n")
    result = completed(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n250 queued\r\n")
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 2


def test_bdat_messages_are_in_flight_one_at_a_time() -> None:
    # Each BDAT LAST leaves with its envelope: without waiting for the one before's final
    # reply, a whole session's messages would be out with their outcomes unknown at once.
    conn = ClientConnection(ClientConfig("client.example"))
    messages = [
        Message(Envelope.build("a@b.example", [f"r{i}@c.example"]), b"hi\r\n") for i in range(3)
    ]
    driver = SessionDriver(conn, messages, starttls=False)
    writes = []
    for reply in [EHLO, b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n"] + [
        b"250 ok\r\n250 ok\r\n250 queued\r\n"
    ] * 3:
        conn.receive_data(reply)
        while (event := conn.next_event()) is not None:  # as the I/O layer does
            driver.handle(event)
        writes.append(conn.data_to_send())
    assert [w.count(b"BDAT ") for w in writes] == [0, 1, 1, 1, 0]
    assert writes[1].startswith(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<r0@c.example>\r\n")
    assert writes[3].endswith(b"BDAT 4 LAST\r\nhi\r\nQUIT\r\n")  # QUIT rides behind the last
    assert [r.recipients[0].status for r in driver.results] == [Status.DELIVERED] * 3


def test_content_with_a_long_line_is_refused_before_any_command() -> None:
    conn = connect(["PIPELINING"])
    with pytest.raises(LineTooLongError):
        conn.begin_transaction(ENVELOPE, b"Subject: l\n\n" + b"x" * 999 + b"\n")
    assert conn.data_to_send() == b"" and conn.state is State.READY


def test_bdat_without_pipelining_resets_before_the_next_held_mail() -> None:
    conn = connect(["CHUNKING"])
    first = Envelope.build("a@b.example", ["r@c.example"])
    second = Envelope.build("a@b.example", ["s@c.example"])
    conn.begin_transaction(first, b"hi\r\n")
    drain(conn)
    conn.begin_transaction(second, b"hi\r\n")  # held: no PIPELINING
    drain(conn)
    sent = []
    for reply in [b"250 ok\r\n", b"550 no such user\r\n", b"250 reset\r\n"]:
        sent.append(conn.data_to_send())
        conn.receive_data(reply)
        drain(conn)
    sent.append(conn.data_to_send())
    # The refused transaction's envelope is reset before the next MAIL (RFC 5321 4.1.1.5),
    # and its BDAT LAST never goes out.
    assert sent == [
        b"MAIL FROM:<a@b.example>\r\n",
        b"RCPT TO:<r@c.example>\r\n",
        b"RSET\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
    ]


def test_end_of_data_that_never_left_is_not_an_unknown_outcome() -> None:
    # Held behind MAIL without PIPELINING, then the connection drops.
    conn = connect(["CHUNKING"])
    conn.begin_transaction(Envelope.build("a@b.example", ["r@c.example"]), b"hi\r\n")
    drain(conn)
    assert conn.data_to_send() == b"MAIL FROM:<a@b.example>\r\n"
    conn.connection_lost()
    [done, _closed] = drain(conn)
    assert isinstance(done, TransactionCompleted)
    assert [(r.status, r.outcome_unknown) for r in done.result.recipients] == [
        (Status.DEFERRED, False)
    ]
    # The server answers 354 and closes in the same read: the content was never handed out.
    conn = connect(["PIPELINING"])
    conn.begin_transaction(Envelope.build("a@b.example", ["r@c.example"]), b"hi\r\n")
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.receive_data(b"")
    events = drain(conn)
    [done] = [e for e in events if isinstance(e, TransactionCompleted)]
    assert [(r.status, r.outcome_unknown) for r in done.result.recipients] == [
        (Status.DEFERRED, False)
    ]
