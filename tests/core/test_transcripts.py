"""Golden transcripts: every case runs with whole replies and again one byte at a time."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import idna
import pytest

from mxsend.protocol import (
    AuthenticationFailed,
    Body,
    ClientConfig,
    ClientConnection,
    CramMD5,
    Envelope,
    Event,
    Login,
    MailOptions,
    Mechanism,
    Notify,
    Plain,
    RcptOptions,
    Ready,
    Ret,
    ScramSHA256,
    ServerClosing,
    State,
    TransactionResult,
    XOAuth2,
    scan_body,
)
from mxsend.protocol._session import Message, SessionDriver
from tests.core.transcript import replay


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


@dataclass
class Case:
    transcript: str
    messages: list[Message] = field(default_factory=list)
    config: ClientConfig = field(default_factory=lambda: ClientConfig("client.example"))
    mechanism: Callable[[], Mechanism] | None = None
    expect: list[tuple[str, str, int]] = field(default_factory=list)  # address, status, code
    final_state: State = State.CLOSED


def message(*to: str, content: bytes = b"hi\r\n", **options: object) -> Message:
    return Message(Envelope.build("alice@example.com", to, MailOptions(**options)), content)  # type: ignore[arg-type]


TLS = ClientConfig("client.example", implicit_tls=True)
AUTH_GREETING = """
S: 220 mx.example.net ESMTP
C: EHLO client.example
S: 250-mx.example.net
S: 250 AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2 SCRAM-SHA-256
"""
# RFC 7677 3 test vector.
SCRAM_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
SCRAM_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SCRAM_SERVER = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
# RFC 2195 2 example.
CRAM_CHALLENGE = "<1896.697170952@postoffice.reston.mci.net>"
IDN = idna.encode("例子.广告").decode()

CASES = {
    "plain-mixed-recipients": Case(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net hello
        S: 250-8BITMIME
        S: 250 ENHANCEDSTATUSCODES
        C: MAIL FROM:<alice@example.com> BODY=7BIT
        S: 250 2.1.0 ok
        C: RCPT TO:<bob@example.net>
        S: 250 2.1.5 ok
        C: RCPT TO:<busy@example.net>
        S: 450 4.2.1 mailbox busy
        C: RCPT TO:<gone@example.net>
        S: 550 5.1.1 no such user
        C: DATA
        S: 354 go ahead
        C: Subject: test
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 queued as 1
        C: QUIT
        S: 221 2.0.0 bye
        """,
        [
            message(
                "bob@example.net",
                "busy@example.net",
                "gone@example.net",
                content=b"Subject: test\n\n.leading dot",
                body=Body.SEVEN_BIT,
            )
        ],
        expect=[
            ("bob@example.net", "delivered", 250),
            ("busy@example.net", "deferred", 450),
            ("gone@example.net", "failed", 550),
        ],
    ),
    "pipelined-two-messages": Case(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250-PIPELINING
        S: 250-SIZE 1000000
        S: 250 8BITMIME
        C: MAIL FROM:<alice@example.com> SIZE=22
        C: RCPT TO:<bob@example.net>
        C: RCPT TO:<carol@example.net>
        C: DATA
        S: 250 ok
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: Subject: one
        C:
        C: body
        C: .
        C: MAIL FROM:<alice@example.com> SIZE=22
        C: RCPT TO:<dave@example.net>
        C: DATA
        S: 250 queued 1
        S: 250 ok
        S: 250 ok
        S: 354 go
        C: Subject: two
        C:
        C: body
        C: .
        C: QUIT
        S: 250 queued 2
        S: 221 bye
        """,
        [
            message(
                "bob@example.net", "carol@example.net", content=b"Subject: one\n\nbody\n", size=22
            ),
            message("dave@example.net", content=b"Subject: two\n\nbody\n", size=22),
        ],
        expect=[
            ("bob@example.net", "delivered", 250),
            ("carol@example.net", "delivered", 250),
            ("dave@example.net", "delivered", 250),
        ],
    ),
    "starttls": Case(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250-STARTTLS
        S: 250 AUTH PLAIN
        C: STARTTLS
        S: 220 2.0.0 ready to start TLS
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 8BITMIME
        C: MAIL FROM:<alice@example.com>
        S: 250 ok
        C: RCPT TO:<bob@example.net>
        S: 250 ok
        C: DATA
        S: 354 go
        C: hi
        C: .
        S: 250 queued
        C: QUIT
        S: 221 bye
        """,
        [message("bob@example.net")],
        expect=[("bob@example.net", "delivered", 250)],
    ),
    "auth-plain": Case(
        AUTH_GREETING
        + f"""
        C: AUTH PLAIN {b64(chr(0) + "alice" + chr(0) + "secret")}
        S: 235 2.7.0 authenticated
        C: QUIT
        S: 221 bye
        """,
        config=TLS,
        mechanism=lambda: Plain("alice", "secret"),
    ),
    "auth-login": Case(
        AUTH_GREETING
        + f"""
        C: AUTH LOGIN
        S: 334 {b64("Username:")}
        C: {b64("alice")}
        S: 334 {b64("Password:")}
        C: {b64("secret")}
        S: 235 2.7.0 authenticated
        C: QUIT
        S: 221 bye
        """,
        config=TLS,
        mechanism=lambda: Login("alice", "secret"),
    ),
    "auth-cram-md5": Case(
        AUTH_GREETING
        + f"""
        C: AUTH CRAM-MD5
        S: 334 {b64(CRAM_CHALLENGE)}
        C: {b64("tim b913a602c7eda7a495b4e6e7334d3890")}
        S: 235 2.7.0 authenticated
        C: QUIT
        S: 221 bye
        """,
        config=TLS,
        mechanism=lambda: CramMD5("tim", "tanstaaftanstaaf"),
    ),
    "auth-xoauth2": Case(
        AUTH_GREETING
        + f"""
        C: AUTH XOAUTH2 {b64("user=alice@example.com" + chr(1) + "auth=Bearer tok" + chr(1) * 2)}
        S: 235 2.7.0 accepted
        C: QUIT
        S: 221 bye
        """,
        config=TLS,
        mechanism=lambda: XOAuth2("alice@example.com", "tok"),
    ),
    "auth-xoauth2-refused": Case(
        AUTH_GREETING
        + f"""
        C: AUTH XOAUTH2 {b64("user=alice@example.com" + chr(1) + "auth=Bearer old" + chr(1) * 2)}
        S: 334 {b64('{"status":"401"}')}
        C:
        S: 535 5.7.8 invalid credentials
        C: QUIT
        S: 221 bye
        """,
        config=TLS,
        mechanism=lambda: XOAuth2("alice@example.com", "old"),
    ),
    "auth-scram-sha-256": Case(
        AUTH_GREETING
        + f"""
        C: AUTH SCRAM-SHA-256 {b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")}
        S: 334 {b64(SCRAM_FIRST)}
        C: {b64(SCRAM_FINAL)}
        S: 334 {b64(SCRAM_SERVER)}
        C:
        S: 235 2.7.0 authenticated
        C: QUIT
        S: 221 bye
        """,
        config=TLS,
        mechanism=lambda: ScramSHA256("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO"),
    ),
    "dsn": Case(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 DSN
        C: MAIL FROM:<alice@example.com> RET=HDRS ENVID=QQ+2B1
        S: 250 ok
        C: RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.net
        S: 250 ok
        C: DATA
        S: 354 go
        C: hi
        C: .
        S: 250 queued
        C: QUIT
        S: 221 bye
        """,
        [
            Message(
                Envelope.build(
                    "alice@example.com",
                    ["bob@example.net"],
                    MailOptions(ret=Ret.HDRS, envid="QQ+1"),
                    RcptOptions(frozenset({Notify.FAILURE, Notify.SUCCESS}), "bob+x@example.net"),
                ),
                b"hi\r\n",
            )
        ],
        expect=[("bob@example.net", "delivered", 250)],
    ),
    "smtputf8": Case(
        f"""
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250-8BITMIME
        S: 250 SMTPUTF8
        C: MAIL FROM:<jösé@example.com> SMTPUTF8
        S: 250 ok
        C: RCPT TO:<用户@{IDN}>
        S: 250 ok
        C: DATA
        S: 354 go
        C: hi
        C: .
        S: 250 queued
        C: QUIT
        S: 221 bye
        """,
        [Message(Envelope.build("jösé@example.com", ["用户@例子.广告"]), b"hi\r\n")],
        expect=[(f"用户@{IDN}", "delivered", 250)],
    ),
    "bdat-pipelined": Case(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250-PIPELINING
        S: 250 CHUNKING
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.net>
        C: BDAT 12 LAST
        C: .hi
        C: there
        C: QUIT
        S: 250 ok
        S: 250 ok
        S: 250 2.0.0 queued
        S: 221 bye
        """,
        [message("bob@example.net", content=b".hi\nthere\n")],
        expect=[("bob@example.net", "delivered", 250)],
    ),
    "server-closes-421-mid-session": Case(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 PIPELINING
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.net>
        C: DATA
        S: 250 ok
        S: 421 4.3.2 shutting down
        """,
        [message("bob@example.net")],
        expect=[("bob@example.net", "deferred", 421)],
    ),
    "helo-fallback": Case(
        """
        S: 220 old.example.net SMTP
        C: EHLO client.example
        S: 502 5.5.1 command not implemented
        C: HELO client.example
        S: 250 old.example.net
        C: MAIL FROM:<alice@example.com>
        S: 250 ok
        C: RCPT TO:<bob@example.net>
        S: 250 ok
        C: DATA
        S: 354 go
        C: hi
        C: .
        S: 250 queued
        C: QUIT
        S: 221 bye
        """,
        [message("bob@example.net")],
        expect=[("bob@example.net", "delivered", 250)],
    ),
}


def run(case: Case, bytewise: bool) -> tuple[ClientConnection, list[Event], SessionDriver]:
    holder: list[SessionDriver] = []

    def on_event(conn: ClientConnection, event: Event) -> None:
        if not holder:
            mechanism = case.mechanism() if case.mechanism else None
            holder.append(SessionDriver(conn, case.messages, mechanism=mechanism))
        holder[0].handle(event)

    conn, events = replay(case.transcript, on_event, config=case.config, bytewise=bytewise)
    return conn, events, holder[0]


def outcomes(results: list[TransactionResult]) -> list[tuple[str, str, int]]:
    return [(str(r.recipient), r.status.value, r.reply.code) for t in results for r in t.recipients]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_transcript(name: str, bytewise: bool) -> None:
    case = CASES[name]
    conn, _, driver = run(case, bytewise)
    assert outcomes(driver.results) == case.expect
    assert conn.state is case.final_state


def test_starttls_forgets_cleartext_capabilities() -> None:
    _, events, _ = run(CASES["starttls"], False)
    ready = [e for e in events if isinstance(e, Ready)]
    assert [r.encrypted for r in ready] == [False, True]
    assert ready[0].capabilities.starttls and "AUTH" in ready[0].capabilities
    assert not ready[1].capabilities.starttls and "AUTH" not in ready[1].capabilities


def test_421_reports_server_closing() -> None:
    _, events, driver = run(CASES["server-closes-421-mid-session"], False)
    assert isinstance(events[-1], ServerClosing)
    assert driver.results[0].recipients[0].reply.enhanced is None  # no ENHANCEDSTATUSCODES


def test_refused_xoauth2_reports_failure() -> None:
    _, events, driver = run(CASES["auth-xoauth2-refused"], False)
    assert any(isinstance(e, AuthenticationFailed) for e in events)
    assert driver.auth_failed is not None and driver.auth_failed.code == 535


def test_enhanced_status_codes_parsed_when_advertised() -> None:
    _, _, driver = run(CASES["plain-mixed-recipients"], False)
    enhanced = [str(r.reply.enhanced) for r in driver.results[0].recipients]
    assert enhanced == ["2.0.0", "4.2.1", "5.1.1"]


def test_scan_body_size_matches_transcript() -> None:
    assert scan_body(b"Subject: one\n\nbody\n").size == 22
