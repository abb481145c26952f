"""One reply more than was asked for (SMTP desynchronisation: RFC 2920 3.1; docs/security.md).

A reply that arrives before its command was sent would be matched to whatever the client sends
next and shift every later reply by one. Golden transcripts end with the server's offending
write; each runs whole and one byte at a time. Then a Hypothesis property splices one extra reply
into every golden transcript of test_transcripts.py.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mxsend.protocol import (
    ClientConfig,
    ClientConnection,
    Event,
    Login,
    Mechanism,
    RemoteProtocolError,
    ResponseInjectionError,
    ScramSHA256,
    ServerClosing,
    State,
    Status,
    TLSRequested,
)
from mxsend.protocol._session import Message, SessionDriver
from tests.core.test_transcripts import (
    AUTH_GREETING,
    CASES,
    SCRAM_FINAL,
    SCRAM_FIRST,
    SCRAM_SERVER,
    TLS,
    Case,
    b64,
    message,
)
from tests.core.transcript import LastWrite, parse, replay_last_write

Outcome = tuple[str, str, int]  # address, status, code; ("...", "not begun", 0) if never begun
BOB = [message("bob@example.net")]
NOT_BEGUN = [("bob@example.net", "not begun", 0)]
LOST = [("bob@example.net", "deferred", 451)]  # connection_lost() after the error


@dataclass
class Desync:
    transcript: str  # ends with the offending write; the client must send nothing after it
    messages: list[Message] = field(default_factory=lambda: BOB)
    expect: list[Outcome] = field(default_factory=lambda: LOST)
    # One byte at a time, the replies before the extra one are acted on as they complete.
    bytewise: list[Outcome] | None = None
    config: ClientConfig = field(default_factory=lambda: ClientConfig("client.example"))
    mechanism: Callable[[], Mechanism] | None = None
    error: type[RemoteProtocolError] = RemoteProtocolError  # whole; bytewise: any such error


GREETED = """
S: 220 mx.example.net ESMTP
C: EHLO client.example
S: 250 mx.example.net
"""
ENVELOPE = """
C: MAIL FROM:<alice@example.com>
S: 250 2.1.0 ok
C: RCPT TO:<bob@example.net>
S: 250 2.1.5 ok
"""

DESYNC = {
    "greeting": Desync(
        """
        S: 220 mx.example.net ESMTP
        S: 250 mx.example.net
        """,
        expect=NOT_BEGUN,
    ),
    "ehlo": Desync(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 PIPELINING
        S: 250 2.1.0 ok
        """,
        expect=NOT_BEGUN,
        bytewise=LOST,  # Ready began the transaction; its commands were never sent
    ),
    "helo-answered-twice": Desync(
        """
        S: 220 old.example.net SMTP
        C: EHLO client.example
        S: 502 5.5.1 command not implemented
        C: HELO client.example
        S: 250 old.example.net
        S: 250 ok
        """,
        expect=NOT_BEGUN,
        bytewise=LOST,
    ),
    "helo-answered-before-sent": Desync(
        """
        S: 220 old.example.net SMTP
        C: EHLO client.example
        S: 502 5.5.1 command not implemented
        S: 250 old.example.net
        """,
        expect=NOT_BEGUN,
    ),
    "starttls-injection": Desync(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 STARTTLS
        C: STARTTLS
        S: 220 2.0.0 ready to start TLS
        S: 250-mx.example.net
        S: 250 PIPELINING
        """,
        expect=NOT_BEGUN,
        error=ResponseInjectionError,
    ),
    "auth-second-challenge-before-answer": Desync(
        AUTH_GREETING
        + f"""
        C: AUTH LOGIN
        S: 334 {b64("Username:")}
        S: 334 {b64("Password:")}
        """,
        expect=NOT_BEGUN,
        config=TLS,
        mechanism=lambda: Login("alice", "secret"),
    ),
    "auth-235-before-last-answer": Desync(
        AUTH_GREETING
        + f"""
        C: AUTH SCRAM-SHA-256 {b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")}
        S: 334 {b64(SCRAM_FIRST)}
        C: {b64(SCRAM_FINAL)}
        S: 334 {b64(SCRAM_SERVER)}
        S: 235 2.7.0 authenticated
        """,
        expect=NOT_BEGUN,
        config=TLS,
        mechanism=lambda: ScramSHA256("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO"),
    ),
    "mail": Desync(
        GREETED
        + """
        C: MAIL FROM:<alice@example.com>
        S: 250 2.1.0 ok
        S: 250 2.1.5 ok
        """,
    ),
    "rcpt": Desync(
        GREETED
        + """
        C: MAIL FROM:<alice@example.com>
        S: 250 2.1.0 ok
        C: RCPT TO:<gone@example.net>
        S: 550 5.1.1 no such user
        C: RCPT TO:<bob@example.net>
        S: 250 2.1.5 ok
        S: 354 go ahead
        """,
        [message("gone@example.net", "bob@example.net")],
        # After the error no earlier reply decides anything, not even the 550.
        [("gone@example.net", "deferred", 451), ("bob@example.net", "deferred", 451)],
    ),
    "data": Desync(
        GREETED
        + ENVELOPE
        + """
        C: DATA
        S: 354 go ahead
        S: 250 2.0.0 queued
        """,
    ),
    "pipelined-group": Desync(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 PIPELINING
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.net>
        C: RCPT TO:<gone@example.net>
        C: DATA
        S: 250 2.1.0 ok
        S: 250 2.1.5 ok
        S: 550 5.1.1 no such user
        S: 354 go ahead
        S: 250 2.0.0 queued
        """,
        [message("bob@example.net", "gone@example.net")],
        [("bob@example.net", "deferred", 451), ("gone@example.net", "deferred", 451)],
    ),
    "bdat": Desync(
        """
        S: 220 mx.example.net ESMTP
        C: EHLO client.example
        S: 250-mx.example.net
        S: 250 CHUNKING
        """
        + ENVELOPE
        + """
        C: BDAT 4 LAST
        C: hi
        S: 250 2.0.0 queued
        S: 250 ok
        """,
        bytewise=[("bob@example.net", "delivered", 250)],  # the 250 was read before the extra
    ),
    "rset-before-second-transaction": Desync(
        GREETED
        + """
        C: MAIL FROM:<alice@example.com>
        S: 250 2.1.0 ok
        C: RCPT TO:<gone@example.net>
        S: 550 5.1.1 no such user
        C: RSET
        S: 250 ok
        S: 250 2.1.0 ok
        """,
        [message("gone@example.net"), message("bob@example.net")],
        # The first transaction completed in an earlier write: its outcome stands.
        [("gone@example.net", "failed", 550), ("bob@example.net", "deferred", 451)],
    ),
    "quit-answered-before-sent": Desync(
        GREETED
        + ENVELOPE
        + """
        C: DATA
        S: 354 go ahead
        C: hi
        C: .
        S: 250 2.0.0 queued
        S: 221 bye
        """,
        bytewise=[("bob@example.net", "delivered", 250)],
    ),
}


def begin(
    config: ClientConfig, messages: list[Message], mechanism: Callable[[], Mechanism] | None
) -> tuple[ClientConnection, SessionDriver]:
    conn = ClientConnection(config)
    return conn, SessionDriver(conn, messages, mechanism=mechanism() if mechanism else None)


def settled(driver: SessionDriver, messages: list[Message]) -> list[Outcome]:
    """Every recipient of every message, in order; a message never begun is "not begun"."""
    found = {id(t.envelope): t for t in driver.results}
    assert len(found) == len(driver.results), "a transaction completed twice"
    out: list[Outcome] = []
    for m in messages:
        result = found.get(id(m.envelope))
        if result is None:
            assert m in driver.unsent, f"transaction for {m.envelope} begun and never completed"
            out += [(str(r.address), "not begun", 0) for r in m.envelope.recipients]
        else:
            out += [(str(r.recipient), r.status.value, r.reply.code) for r in result.recipients]
    return out


def lose(conn: ClientConnection, driver: SessionDriver) -> list[Event]:
    """The caller's part after a protocol error: drop the link, collect the results."""
    conn.connection_lost("aborted after a protocol error")
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
        driver.handle(event)
    assert conn.state is State.CLOSED
    return events


def run_desync(case: Desync, bytewise: bool) -> tuple[ClientConnection, SessionDriver, LastWrite]:
    conn, driver = begin(case.config, case.messages, case.mechanism)
    last = replay_last_write(
        case.transcript, conn, lambda _, e: driver.handle(e), bytewise=bytewise
    )
    return conn, driver, last


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(DESYNC))
def test_extra_reply_is_a_protocol_error(name: str, bytewise: bool) -> None:
    case = DESYNC[name]
    conn, driver, last = run_desync(case, bytewise)
    assert isinstance(last.error, case.error if not bytewise else RemoteProtocolError), last
    assert conn.state is State.ERROR
    if not bytewise:
        # Raised before any reply of the offending write was acted on.
        assert last.events == [] and last.sent_after == b""
    with pytest.raises(RemoteProtocolError):
        conn.next_event()  # it stays in error
    lose(conn, driver)
    expect = case.bytewise if bytewise and case.bytewise is not None else case.expect
    assert settled(driver, case.messages) == expect


@pytest.mark.parametrize("name", sorted(DESYNC))
def test_nothing_handed_out_after_the_error_bytewise(name: str) -> None:
    # Read a byte at a time, replies before the extra one are acted on and produce
    # commands; once the extra reply arrives none of them may leave.
    _, _, last = run_desync(DESYNC[name], bytewise=True)
    assert last.error is not None
    assert last.sent_after == b""


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_reply_after_the_quit_reply(bytewise: bool) -> None:
    # Whole, the 221 and the extra reply arrive together: a protocol error. One byte at a time,
    # the 221 closes the session first and nothing after it is read. Either way the transaction
    # completed in an earlier write keeps its outcome and nothing more is sent.
    transcript = (
        GREETED
        + ENVELOPE
        + """
        C: DATA
        S: 354 go ahead
        C: hi
        C: .
        S: 250 2.0.0 queued
        C: QUIT
        S: 221 bye
        S: 250 ok
        """
    )
    conn, driver = begin(ClientConfig("client.example"), BOB, None)
    last = replay_last_write(transcript, conn, lambda _, e: driver.handle(e), bytewise=bytewise)
    assert (last.error is None) is bytewise and last.sent_after == b""
    assert conn.state is (State.CLOSED if bytewise else State.ERROR)
    lose(conn, driver)
    assert settled(driver, BOB) == [("bob@example.net", "delivered", 250)]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_unsolicited_421_at_the_end_of_a_write_closes(bytewise: bool) -> None:
    # RFC 5321 3.8: a server may announce it is closing at any time; not a protocol error.
    transcript = (
        GREETED
        + """
        C: MAIL FROM:<alice@example.com>
        S: 250 2.1.0 ok
        S: 421 4.3.2 shutting down
        """
    )
    conn, driver = begin(ClientConfig("client.example"), BOB, None)
    last = replay_last_write(transcript, conn, lambda _, e: driver.handle(e), bytewise=bytewise)
    assert last.error is None
    assert isinstance(last.events[-1], ServerClosing) and conn.state is State.CLOSED
    assert settled(driver, BOB) == [("bob@example.net", "deferred", 421)]


# -- the splice property ----------------------------------------------------------------------


@dataclass
class Played:
    """One run of a case: per recipient ``(message, index) -> (status, code)``, a message never
    begun counting as deferred with code 0 (the Deliverer defers it with the session's error)."""

    outcome: dict[tuple[int, int], tuple[Status, int]]
    completed_in: dict[int, int]  # message -> write after which its result came out
    raised_in: int | None  # write whose feeding raised RemoteProtocolError
    state_after: list[State]  # after each write fed


Chunker = Callable[[bytes], list[bytes]]  # cuts one write into the chunks fed


def whole(write: bytes) -> list[bytes]:
    return [write]


def play(case: Case, writes: list[bytes], chunker: Chunker, *, per_chunk: bool) -> Played:
    """Feed ``writes``, each in the chunks ``chunker`` cuts, draining events after every chunk
    (``per_chunk``) or once the write is in (as the adapter does per read), then calling
    ``data_to_send()``. Stop at an error or once closed; then ``connection_lost()`` and drain
    its results through the driver, as the adapter does."""
    conn, driver = begin(case.config, case.messages, case.mechanism)
    index = {id(m.envelope): i for i, m in enumerate(case.messages)}
    completed: dict[int, int] = {}
    raised = None
    states: list[State] = []

    def drain() -> None:
        while (event := conn.next_event()) is not None:
            if isinstance(event, TLSRequested):
                conn.tls_established()
            driver.handle(event)

    def record(write: int) -> None:
        for result in driver.results[len(completed) :]:
            message = index[id(result.envelope)]
            assert message not in completed, "a transaction completed twice"
            completed[message] = write

    for i, write in enumerate(writes):
        try:
            for chunk in chunker(write):
                conn.receive_data(chunk)
                if per_chunk:
                    drain()
            drain()
        except RemoteProtocolError:
            raised = i
        record(i)
        states.append(conn.state)
        if raised is not None:
            assert conn.state is State.ERROR
            break
        conn.data_to_send()
        if conn.state is State.CLOSED:
            break
    lose(conn, driver)
    record(len(writes))
    outcome: dict[tuple[int, int], tuple[Status, int]] = {}
    for result in driver.results:
        m = index[id(result.envelope)]
        for r, recipient in enumerate(result.recipients):
            outcome[(m, r)] = (recipient.status, recipient.reply.code)
    for m, msg in enumerate(case.messages):
        if m not in completed:
            # Every begun transaction ends with a result.
            assert msg in driver.unsent, f"{msg.envelope} begun and never completed"
            for r in range(len(msg.envelope.recipients)):
                outcome[(m, r)] = (Status.DEFERRED, 0)
    return Played(outcome, completed, raised, states)


def server_writes(case: Case) -> list[bytes]:
    return [data for side, data in parse(case.transcript) if side == "S"]


@functools.cache
def reference(name: str) -> Played:
    case = CASES[name]
    played = play(case, server_writes(case), whole, per_chunk=False)
    assert played.raised_in is None
    got = [
        (str(r.address), played.outcome[(m, i)][0].value, played.outcome[(m, i)][1])
        for m, msg in enumerate(case.messages)
        for i, r in enumerate(msg.envelope.recipients)
    ]
    assert got == case.expect, name  # the harness replays the golden case faithfully
    return played


def closing_at(write: bytes) -> int | None:
    """Where a 421 reply starts in ``write``, if one does."""
    offset = 0
    for line in write.split(b"\n"):
        if line.startswith(b"421"):
            return offset
        offset += len(line) + 1
    return None


SPECIAL_CODES = [220, 221, 235, 250, 251, 334, 354, 421, 451, 550, 554]


@st.composite
def extra_replies(draw: st.DrawFn) -> tuple[int, bytes]:
    """Any syntactically valid reply, 200-559: 1-3 lines of printable text."""
    code = draw(
        st.sampled_from(SPECIAL_CODES)
        | st.builds(
            lambda a, b, c: 100 * a + 10 * b + c,
            st.integers(2, 5),
            st.integers(0, 5),
            st.integers(0, 9),
        )
    )
    texts = draw(
        st.lists(
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16),
            min_size=1,
            max_size=3,
        )
    )
    last = len(texts) - 1
    return code, b"".join(
        f"{code}{'-' if i < last else ' '}{t}\r\n".encode() for i, t in enumerate(texts)
    )


def chunkers(data: st.DataObject) -> Chunker:
    """Cut each write where Hypothesis likes: whole, one byte at a time, or anywhere."""

    def cut(write: bytes) -> list[bytes]:
        if len(write) < 2:
            return [write]
        cuts = data.draw(
            st.just(list(range(1, len(write))))
            | st.lists(st.integers(1, len(write) - 1), max_size=6).map(sorted),
            label="cuts",
        )
        bounds = [0, *cuts, len(write)]
        return [write[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    return cut


def check(ref: Played, spliced: Played, at: int, *, closes: bool, whole_write: bool) -> None:
    """Compare a spliced run with the unspliced one ``ref``; X went into write ``at``."""
    assert spliced.outcome.keys() == ref.outcome.keys()
    for key, got in spliced.outcome.items():
        want, done = ref.outcome[key], ref.completed_in[key[0]]
        if done < at:
            assert got == want, (key, got, want)  # settled before X arrived
            continue
        assert got == want or got[0] is Status.DEFERRED, (key, got, want)
        if closes:
            # A 421 is no desync: refusals read before it still decide; a final reply never came.
            assert done == at or got[0] is not Status.DELIVERED, (key, got, want)
        elif done > at or whole_write:
            assert got[0] is Status.DEFERRED, (key, got, want)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(CASES)), extra_replies(), st.data())
def test_splice_anywhere(name: str, extra: tuple[int, bytes], data: st.DataObject) -> None:
    """The splice property, mode A: one reply too many, at any offset.

    Corpus: the golden CASES of test_transcripts.py; the server stream is their S: groups, one
    write each. X is one extra complete reply: a code 200-559 (first digit 2-5, second 0-5) and
    1-3 lines of printable text, ``-`` after the code on all but the last, CRLF endings. X is
    inserted at a byte offset k of the concatenated stream, 0 <= k <= its length, possibly inside
    a reply line; an offset on the boundary between two writes goes to the end of the earlier
    one, so X arrives before the client's next command (the desynchronisation threat). Each
    write is fed in chunks Hypothesis cuts, events are drained once it is all in (the adapter's
    read granularity), then ``data_to_send()``; feeding stops once ``next_event()`` raised or
    the session closed; then ``connection_lost()`` and its results are drained.

    Compared with the unspliced run, where a message never begun counts as deferred, every
    recipient keeps its outcome if its transaction completed in an earlier write, else keeps it
    or is DEFERRED; it is DEFERRED if its transaction completed in the spliced write or a later
    one, since nothing of the spliced write is acted on; and the spliced write raises
    RemoteProtocolError. Except when X is a 421 (RFC 5321 3.8), which is no desync: the server
    closes, replies before it are acted on and refusals read before it still decide, so
    transactions that completed in later writes are only never DELIVERED.

    Two kinds of draw are discarded, as the spliced stream is then one an honest server could
    send rather than one reply too many: an X placed before a 421 of its write (that server
    closes with commands unanswered, and X answers one of them), and a 421 X inside a reply line
    (it cuts that reply short, e.g. an EHLO reply losing its last capabilities, and nothing
    after the 421 is read).
    """
    case = CASES[name]
    ref = reference(name)
    writes = server_writes(case)
    code, x = extra
    k = data.draw(st.integers(0, sum(map(len, writes))), label="k")
    at, start = 0, 0
    while start + len(writes[at]) < k:  # the first write ending at or after k
        start += len(writes[at])
        at += 1
    pos = k - start
    closing = closing_at(writes[at])
    assume(closing is None or pos > closing)
    assume(code != 421 or pos == 0 or writes[at][pos - 1 : pos] == b"\n")
    spliced = [*writes[:at], writes[at][:pos] + x + writes[at][pos:], *writes[at + 1 :]]
    played = play(case, spliced, chunkers(data), per_chunk=False)
    if code != 421 and closing is None:
        assert played.raised_in == at
    check(ref, played, at, closes=code == 421, whole_write=True)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(CASES)), extra_replies(), st.data())
def test_splice_at_end_of_write_drained_per_chunk(
    name: str, extra: tuple[int, bytes], data: st.DataObject
) -> None:
    """The splice property, mode B: one reply too many at the end of a write, drained per
    chunk.

    X (as in mode A) is appended to the end of one write, which is fed in chunks Hypothesis
    cuts with events drained after every chunk, ``data_to_send()`` only after the write. The
    replies of that write read before X may be acted on, so its recipients keep their outcome
    or are DEFERRED; otherwise as in mode A. The write raises RemoteProtocolError unless X is a
    421 or the write closed the session in the unspliced run (221, 421: nothing after is read).
    """
    case = CASES[name]
    ref = reference(name)
    writes = server_writes(case)
    code, x = extra
    at = data.draw(st.integers(0, len(writes) - 1), label="write")
    spliced = [w + x if i == at else w for i, w in enumerate(writes)]
    played = play(case, spliced, chunkers(data), per_chunk=True)
    if code != 421 and ref.state_after[at] is not State.CLOSED:
        assert played.raised_in == at
    check(ref, played, at, closes=code == 421, whole_write=False)


def test_an_end_of_data_that_never_left_is_not_outcome_unknown() -> None:
    # One byte at a time the 354 is acted on (body and dot produced), then the extra 250
    # arrives before any of it was handed out: the message surely did not go.
    conn, driver, last = run_desync(DESYNC["data"], bytewise=True)
    assert last.sent_after == b""
    lose(conn, driver)
    [result] = driver.results
    assert all(r.status.value == "deferred" and not r.outcome_unknown for r in result.recipients)


def test_the_first_lines_of_a_reply_sent_ahead_of_its_command_are_caught() -> None:
    # Forged capabilities arrive with the greeting, the reply's last line after the EHLO:
    # the reply began before its command was sent.
    conn = ClientConnection(ClientConfig("client.example"))
    conn.receive_data(b"220 mx\r\n250-forged-early\r\n250-AUTH PLAIN\r\n")
    with pytest.raises(RemoteProtocolError, match="no command outstanding"):
        while conn.next_event() is not None:
            pass
    assert conn.state is State.ERROR and conn.data_to_send() == b""


def test_an_unasked_421_may_arrive_a_byte_at_a_time() -> None:
    conn = ClientConnection(ClientConfig("client.example"))
    conn.receive_data(b"220 mx\r\n")
    conn.next_event()
    conn.data_to_send()
    conn.receive_data(b"250 mx\r\n")
    conn.next_event()
    for byte in b"421 4.3.2 shutting down\r\n":
        conn.receive_data(bytes([byte]))
    events = []
    while (event := conn.next_event()) is not None:
        events.append(type(event).__name__)
    assert events == ["ServerClosing"]
