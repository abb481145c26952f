"""The sans-I/O ESMTP client connection: bytes in, events out, bytes to send.

Feed received bytes to :meth:`ClientConnection.receive_data`, read events from
:meth:`~ClientConnection.next_event`, write :meth:`~ClientConnection.data_to_send` to the
peer. Every command sent is queued with the reply it expects; every complete reply pops the
oldest (RFC 2920 3.1), so pipelining needs no locks.

A command counts as sent once :meth:`~ClientConnection.data_to_send` has handed it out. Replies
are parsed as soon as their bytes arrive, and each must answer a command sent before then and not
yet answered: a reply that arrives ahead of its command (one appended to a greeting, an EHLO
reply, a 220 to STARTTLS or a pipelined group) would otherwise be matched to whatever the
client sends next and shift every later reply by one (SMTP desynchronisation). Such a reply is a
protocol error before any reply of that read is acted on.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from mxsend.protocol._address import validate_domain
from mxsend.protocol._auth import Mechanism
from mxsend.protocol._capabilities import Capabilities
from mxsend.protocol._commands import (
    VERB_AUTH,
    VERB_BDAT,
    VERB_DATA,
    VERB_DOT,
    VERB_MAIL,
    VERB_RCPT,
    WORDS,
    Command,
    Verb,
    command_line,
)
from mxsend.protocol._encoder import BodyEncoder, LinePolicy, encode_whole
from mxsend.protocol._errors import (
    CleartextAuthError,
    ExtensionRequiredError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
    ResponseInjectionError,
)
from mxsend.protocol._events import (
    Authenticated,
    AuthenticationFailed,
    BodyRequested,
    BodySent,
    Closed,
    Event,
    Greeted,
    Ready,
    RecipientResult,
    ServerClosing,
    SessionRefused,
    Status,
    TLSRefused,
    TLSRequested,
    TransactionCompleted,
    TransactionResult,
)
from mxsend.protocol._options import NO_RCPT_OPTIONS, Body, Envelope, xtext
from mxsend.protocol._reply import Reply, ReplyParser
from mxsend.protocol._state import CLOSED, ERROR, MAIL, READY, TLS, Input, State, transition

__all__ = ["MAX_AUTH_ROUNDS", "ClientConfig", "ClientConnection", "Trace"]

_DATA, _RSET, _NOOP, _QUIT, _STARTTLS = (
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
)

# The two transitions every message makes are written inline (begin_transaction, end_body).
assert transition(State.READY, Input.BEGIN_TRANSACTION) is State.MAIL
assert transition(State.MAIL, Input.END_BODY) is State.READY

# A SASL exchange longer than this is a server stalling us (SCRAM needs 2 rounds).
MAX_AUTH_ROUNDS = 8

#: ``trace(direction, line)``: "C" for what we send, "S" for what we receive; AUTH data
#: is already redacted and message content is summarised.
Trace = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How a connection behaves. ``helo_name`` must be a domain or address literal."""

    helo_name: str
    pipelining: bool = True  #: pipeline when the server offers PIPELINING
    chunking: bool = True  #: use BDAT when the server offers CHUNKING
    helo_fallback: bool = True  #: send HELO when EHLO gets a 5xx (RFC 5321 3.2)
    implicit_tls: bool = False  #: the channel is TLS from the start (RFC 8314, port 465)
    allow_cleartext_auth: bool = False  #: let AUTH go over an unencrypted channel
    line_policy: LinePolicy = LinePolicy.REJECT

    def __post_init__(self) -> None:
        validate_domain(self.helo_name)


class _Transaction:
    """Book-keeping for one MAIL transaction while its replies come in."""

    __slots__ = (
        "accepted",
        "bdat_held",
        "body_requested",
        "body_sent",
        "content",
        "dropped",
        "encoder",
        "envelope",
        "failure",
        "final_reply",
        "id",
        "mail_reply",
        "outstanding",
        "rcpt_replies",
        "size",
        "use_bdat",
    )

    def __init__(
        self,
        ident: int,
        envelope: Envelope,
        use_bdat: bool,
        encoder: BodyEncoder | None,
        size: int = 0,
    ) -> None:
        self.id = ident
        self.envelope = envelope
        self.use_bdat = use_bdat
        self.encoder = encoder  # for content streamed; None for content given up front
        self.size = size  # of content given up front, canonical (for the trace)
        self.content: bytes | None = None  # given up front, encoded: sent on 354 by itself
        self.dropped: tuple[str, ...] = ()
        self.mail_reply: Reply | None = None
        self.rcpt_replies: list[Reply | None] = [None] * len(envelope.recipients)
        self.accepted = 0  # recipients the server took
        self.failure: Reply | None = None  # the reply that ended it before the final reply
        self.final_reply: Reply | None = None
        self.outstanding = 0  # replies still expected for it
        self.body_requested = False
        self.body_sent = False  # end of data written: the final reply decides
        self.bdat_held = b""  # one encoded chunk kept back so the last can carry LAST

    @property
    def mail_ok(self) -> bool:
        return self.mail_reply is not None and self.mail_reply.is_positive


@dataclass(slots=True)
class _Expect:
    verb: Verb
    transaction: _Transaction | None = None
    index: int = 0


class ClientConnection:
    """One SMTP client session, with no I/O of its own.

    The session greets (EHLO, falling back to HELO) by itself; the caller then decides on
    :meth:`start_tls`, :meth:`authenticate`, :meth:`begin_transaction` and :meth:`quit`.
    Methods that are not allowed in the current state raise :class:`LocalProtocolError` and
    change nothing. :meth:`next_event` raises :class:`RemoteProtocolError` when the server
    breaks the protocol; the caller must then abort the connection and call
    :meth:`connection_lost` to collect the results of unfinished transactions.
    """

    def __init__(self, config: ClientConfig, *, trace: Trace | None = None) -> None:
        self.config = config
        self._trace = trace
        self._state = State.GREETING
        self._parser = ReplyParser()
        self._expected: deque[_Expect] = deque([_Expect(Verb.GREETING)])
        self._sent = 1  # expects at the front of _expected whose command was handed out
        self._inbox: deque[Reply] = deque()  # complete replies received, not yet handled
        self._broken: RemoteProtocolError | None = None  # found on arrival, raised in order
        self._held: deque[tuple[bytes, _Expect]] = deque()  # waiting their turn, no pipelining
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._capabilities = Capabilities()
        self._pipelining = False  # these three follow _capabilities: see _set_capabilities
        self._size_limit: int | None = None
        self._offers_size = False
        self._offers_dsn = False
        self._use_bdat = False
        self._encrypted = config.implicit_tls
        self._mechanism: Mechanism | None = None
        self._auth_rounds = 0
        self._current: _Transaction | None = None
        self._transactions: list[_Transaction] = []  # begun and not yet completed
        self._next_id = 1
        self._eof = False
        self._needs_reset = False  # a failed transaction may have left an envelope open
        self._replies = 0

    # -- what the caller reads ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def capabilities(self) -> Capabilities:
        """What the server offered in its last EHLO (empty before, or after HELO)."""
        return self._capabilities

    @property
    def encrypted(self) -> bool:
        return self._encrypted

    @property
    def pipelining(self) -> bool:
        return self._pipelining

    @property
    def idle(self) -> bool:
        """READY with no reply outstanding: nothing in flight."""
        return self._state is State.READY and not self._expected and not self._held

    @property
    def chunking(self) -> bool:
        """Transactions use BDAT (RFC 3030): offered, and not turned off."""
        return self._use_bdat

    @property
    def earlier_settled(self) -> bool:
        """No reply is due for a transaction before the current one. Content that may have
        to be abandoned midway (a file) waits for this, so that cutting the connection for
        it cannot leave an earlier message's outcome unknown; under BDAT, which has no 354
        to wait for, all content does, so one outcome at most is unknown at a time."""
        current = self._current
        return all(e.transaction is None or e.transaction is current for e in self._expected)

    @property
    def body_refused(self) -> bool:
        """The server already refused the transaction whose content is being sent (e.g. a
        BDAT chunk refused): the rest has nowhere to go and can be ended at once."""
        txn = self._current
        return txn is not None and txn.failure is not None

    @property
    def awaiting(self) -> tuple[int, str] | None:
        """``(replies so far, stage)`` while a reply is awaited, e.g. ``(3, "RCPT")``; None
        otherwise. I/O layers run one absolute deadline per distinct value (RFC 5321
        4.5.3.2): bytes that trickle in without completing a reply do not extend it."""
        if not self._expected or self._state in (TLS, ERROR, CLOSED):
            return None
        return self._replies, WORDS[self._expected[0].verb]

    def data_to_send(self) -> bytes:
        """The bytes to write to the peer now (possibly empty). The commands in them count as
        sent from now on: only replies received after this call may answer them."""
        self._sent = len(self._expected)
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed the connection.

        Complete replies are parsed and checked here, on arrival; errors surface from
        :meth:`next_event`, before any reply received with them is acted on."""
        if not data:
            self._eof = True
            return
        if self._state in (CLOSED, ERROR) or self._broken is not None:
            return
        if self._state is TLS:
            self._broken = ResponseInjectionError("data received after 220 to STARTTLS, before TLS")
            return
        parser = self._parser
        parser.feed(data)
        inbox = self._inbox
        try:
            while (reply := parser.next_reply()) is not None:
                if len(inbox) >= self._sent and reply.code != 421:
                    raise self._unsolicited(str(reply))
                inbox.append(reply)
                if reply.code == 421:
                    return  # the server is closing (RFC 5321 3.8): nothing after it counts
            if parser.pending and len(inbox) >= self._sent and not _may_be_421(parser):
                # The start of a reply with no command left to answer: even if it ends after
                # the next command goes out, its first lines came before it.
                start = parser.partial_code.decode("ascii", "replace")
                self._broken = self._unsolicited(f"{start}... (incomplete)")
        except RemoteProtocolError as exc:
            self._broken = exc

    def _unsolicited(self, reply: str) -> RemoteProtocolError:
        if self._expected and self._expected[-1].verb is Verb.STARTTLS:
            # RFC 3207 5 and the NO STARTTLS study: replies forged ahead of the handshake.
            return ResponseInjectionError(f"reply received with the 220 to STARTTLS: {reply}")
        return RemoteProtocolError(f"reply with no command outstanding: {reply}")

    def next_event(self) -> Event | None:
        """The next event, or None until more data arrives."""
        while not self._events:
            if self._state is ERROR:
                raise RemoteProtocolError("connection is in the error state")
            if self._state is CLOSED:
                return None
            if self._broken is not None:
                self._fail_protocol(self._broken)
            if not self._inbox:
                if self._eof:
                    self.connection_lost("connection closed by the server")
                    continue
                return None
            reply = self._inbox.popleft()
            if self._trace is not None:
                last = len(reply.lines) - 1
                for i, line in enumerate(reply.lines):
                    self._trace("S", f"{reply.code}{'-' if i < last else ' '}{line}".rstrip())
            try:
                self._handle(reply)
            except RemoteProtocolError:
                self._error()
                raise
        return self._events.popleft()

    def _fail_protocol(self, exc: RemoteProtocolError) -> NoReturn:
        self._inbox.clear()
        self._error()
        raise exc

    def connection_lost(self, reason: str = "connection lost") -> None:
        """The transport is gone: unfinished transactions complete as deferred (RFC 5321
        3.8 counts a lost connection as 451); after the end of data, with outcome unknown."""
        if self._state is State.CLOSED:
            return
        reply = Reply.synthesized(451, "4.4.2", reason)
        self._unsend_ends()  # an end of data still held or not handed out never left
        # After a protocol error the replies of unfinished transactions may belong to other
        # commands (RFC 5321 3.8, RFC 2920 3.2): none decides anything; every recipient is deferred.
        distrust = self._state is State.ERROR
        for txn in list(self._transactions):
            unknown = txn.body_sent and txn.final_reply is None
            self._complete(txn, reply, unknown=unknown, distrust=distrust)
        self._forget_outstanding()
        self._move(Input.CONNECTION_LOST)
        self._events.append(Closed())

    # -- the caller's actions ---------------------------------------------------------------

    def start_tls(self) -> None:
        """Send STARTTLS (RFC 3207). Wait for TLSRequested, start TLS, call tls_established."""
        self._require_idle("STARTTLS")
        if self._encrypted:
            raise LocalProtocolError("the channel is already encrypted")
        self._move(Input.START_TLS)
        self._write(_STARTTLS, _Expect(Verb.STARTTLS))

    def tls_established(self) -> None:
        """TLS is up: forget everything learnt in cleartext and say EHLO again (RFC 3207 4.2)."""
        if self._state is not State.TLS:
            raise LocalProtocolError(f"tls_established() in state {self._state.name}")
        self._move(Input.TLS_ESTABLISHED)
        self._encrypted = True
        self._set_capabilities(Capabilities())
        self._parser = ReplyParser()
        self._write(self._hello(Verb.EHLO), _Expect(Verb.EHLO))

    def authenticate(self, mechanism: Mechanism) -> None:
        """Start AUTH (RFC 4954) with ``mechanism``; only on an encrypted channel unless the
        configuration allows cleartext."""
        self._require_idle("AUTH")
        if not (self._encrypted or self.config.allow_cleartext_auth):
            raise CleartextAuthError("refusing to send credentials over an unencrypted channel")
        if mechanism.name.upper() not in self._capabilities.auth_mechanisms:
            raise LocalProtocolError(f"the server does not offer AUTH {mechanism.name}")
        initial = mechanism.initial_response()
        params: tuple[str, ...] = ()
        if initial is not None:
            params = (base64.b64encode(initial).decode("ascii") or "=",)
        command = Command(Verb.AUTH, mechanism.name.upper(), params, sensitive=True)
        line = command.to_bytes()
        self._move(Input.AUTHENTICATE)
        self._mechanism = mechanism
        self._auth_rounds = 0
        self._write(line, _Expect(Verb.AUTH), command)

    def begin_transaction(self, envelope: Envelope, content: bytes | None = None) -> int:
        """Send MAIL, RCPT for each recipient and DATA (or, with CHUNKING, prepare BDAT); with
        PIPELINING all in one write. Returns the transaction id used in events.

        ``content`` given here (small, in memory) is encoded at once and sent by the
        connection itself: after the 354 to DATA, or as one BDAT LAST in the same write;
        :class:`BodySent` then says the session may go on. Without it, :class:`BodyRequested`
        asks for the content through :meth:`send_body` and :meth:`end_body`.

        Raises :class:`ExtensionRequiredError`, :class:`MessageTooLargeError` or (for
        ``content`` under LinePolicy.REJECT) :class:`LineTooLongError`, sending nothing, when
        the server cannot take this message; ``err.reply`` reports it.
        """
        if self._state is not READY:
            raise LocalProtocolError(f"cannot begin a transaction in state {self._state.name}")
        mail_params, dropped = self._mail_parameters(envelope)
        # Lines are built (and may raise) before any state changes.
        mail = "MAIL FROM:" + _path(envelope.sender)
        if mail_params:
            mail += " " + " ".join(mail_params)
        lines = [command_line(VERB_MAIL, mail)]
        dsn = self._offers_dsn
        for recipient in envelope.recipients:
            rcpt = f"RCPT TO:<{recipient.address}>"
            if (
                dsn
                and recipient.options is not NO_RCPT_OPTIONS  # a plain one has no parameters
                and (rcpt_params := recipient.options.parameters())
            ):
                rcpt += " " + " ".join(rcpt_params)
            lines.append(command_line(VERB_RCPT, rcpt))
        use_bdat = self._use_bdat
        policy = self.config.line_policy
        if content is None:  # streamed: an encoder carries its state from chunk to chunk
            encoder = BodyEncoder(dot_stuff=not use_bdat, line_policy=policy)
            txn, encoded = _Transaction(self._next_id, envelope, use_bdat, encoder), None
        else:
            encoded, size = encode_whole(content, dot_stuff=not use_bdat, line_policy=policy)
            txn = _Transaction(self._next_id, envelope, use_bdat, None, size)
        txn.dropped = dropped
        self._next_id += 1
        self._state = MAIL  # READY --begin_transaction--> MAIL, checked above
        self._current = txn
        self._transactions.append(txn)
        if self._needs_reset:
            self._needs_reset = False
            self._write(_RSET, _Expect(Verb.RSET))
        expects = [_Expect(VERB_MAIL, txn)]
        for index in range(len(lines) - 1):  # a loop, not a comprehension: no frame of its own
            expects.append(_Expect(VERB_RCPT, txn, index))
        if not use_bdat:
            lines.append(_DATA)
            expects.append(_Expect(VERB_DATA, txn))
            txn.content = encoded
        elif encoded is not None:  # RFC 3030: the whole content as one last chunk
            lines.append(command_line(VERB_BDAT, f"BDAT {len(encoded)} LAST") + encoded)
            expects.append(_Expect(VERB_BDAT, txn, 1))
            txn.body_sent = True
        if self._trace is None and self._pipelining:
            # Nothing to trace or hold: the whole group goes out in one write (RFC 2920).
            txn.outstanding += len(lines)
            self._out += lines
            self._expected += expects
        else:
            for line, expect in zip(lines, expects, strict=True):
                self._write(line, expect)
        if use_bdat and encoded is not None:
            self._body_out(txn)
        elif use_bdat:
            txn.body_requested = True
            self._events.append(BodyRequested(txn.id))
        return txn.id

    def _body_out(self, txn: _Transaction) -> None:
        """Content given to begin_transaction() is written: the session goes on."""
        self._state = READY  # MAIL --end_body--> READY: only called in MAIL
        self._current = None
        self._events.append(BodySent(txn.id))

    def send_body(self, data: bytes) -> None:
        """Message content for the current transaction, in chunks of any size."""
        txn, encoder = self._body_transaction()
        if txn.failure is not None:
            return  # the server already refused it; the content has nowhere to go
        encoded = encoder.encode(data)
        if not encoded:
            return
        if not txn.use_bdat:
            self._out.append(encoded)
            return
        if txn.bdat_held:
            self._bdat(txn, txn.bdat_held, last=False)
        txn.bdat_held = encoded

    def end_body(self) -> None:
        """End the content: ``.`` CRLF after DATA, or BDAT ... LAST (RFC 3030)."""
        txn, encoder = self._body_transaction()
        self._state = READY  # MAIL --end_body--> READY: _body_transaction checked it
        self._current = None
        if txn.failure is not None:
            self._settle(txn)
            return
        tail = encoder.finish()
        txn.body_sent = True
        if txn.use_bdat:
            self._bdat(txn, txn.bdat_held + tail, last=True)
            txn.bdat_held = b""
        else:
            self._out.append(tail)
            txn.outstanding += 1
            self._expected.append(_Expect(VERB_DOT, txn))
            if self._trace is not None:
                self._trace("C", f"<{encoder.size} octets of message content>")
                self._trace("C", ".")

    def reset(self) -> None:
        """Send RSET (RFC 5321 4.1.1.5), e.g. to probe a reused connection."""
        self._require_ready("RSET")
        self._write(_RSET, _Expect(Verb.RSET))

    def noop(self) -> None:
        """Send NOOP (RFC 5321 4.1.1.9)."""
        self._require_ready("NOOP")
        self._write(_NOOP, _Expect(Verb.NOOP))

    def quit(self) -> None:
        """Send QUIT; after a pipelined final dot it may share its write."""
        self._require_ready("QUIT")
        self._move(Input.QUIT)
        self._write(_QUIT, _Expect(Verb.QUIT))

    # -- helpers for the caller's actions ---------------------------------------------------

    def _require_ready(self, what: str) -> None:
        if self._state is not State.READY:
            raise LocalProtocolError(f"cannot send {what} in state {self._state.name}")

    def _require_idle(self, what: str) -> None:
        self._require_ready(what)
        if self._expected or self._held:
            raise LocalProtocolError(f"cannot send {what} while replies are outstanding")

    def _body_transaction(self) -> tuple[_Transaction, BodyEncoder]:
        txn = self._current
        if self._state is not State.MAIL or txn is None or not txn.body_requested:
            raise LocalProtocolError("no transaction is waiting for its content")
        assert txn.encoder is not None  # content is asked for only when not given up front
        return txn, txn.encoder

    def _mail_parameters(self, envelope: Envelope) -> tuple[tuple[str, ...], tuple[str, ...]]:
        caps, options = self._capabilities, envelope.options
        params: list[str] = []
        dropped: list[str] = []
        size = options.size
        if size is not None:
            limit = self._size_limit
            if limit is not None and size > limit:
                raise MessageTooLargeError(
                    f"message of {size} octets exceeds the server's limit of {limit}"
                )
            if self._offers_size:
                params.append(f"SIZE={size}")
        if (
            options.body is None
            and not options.requiretls
            and not envelope.needs_smtputf8
            and not envelope.wants_dsn
        ):
            return tuple(params), ()  # the common case: nothing more to decide
        if options.body is not None:
            if caps.eightbitmime:
                params.append(f"BODY={options.body.value}")
            elif options.body is Body.EIGHT_BIT_MIME:
                raise ExtensionRequiredError(
                    "message has 8-bit content and the server does not offer 8BITMIME",
                    enhanced="5.6.3",
                )
            else:
                dropped.append("BODY=7BIT")
        if envelope.needs_smtputf8:
            if not caps.smtputf8:
                raise ExtensionRequiredError(
                    "UTF-8 address needs SMTPUTF8 and the server does not offer it",
                    code=553,
                    enhanced="5.6.7",
                )
            params.append("SMTPUTF8")
        wants_dsn = envelope.wants_dsn
        if wants_dsn and caps.dsn:
            if options.ret is not None:
                params.append(f"RET={options.ret.value}")
            if options.envid is not None:
                params.append("ENVID=" + xtext(options.envid))
        elif wants_dsn and options.require_dsn:
            raise ExtensionRequiredError("DSN was required and the server does not offer it")
        elif wants_dsn:
            dropped.append("DSN parameters (RET, ENVID, NOTIFY, ORCPT): server lacks DSN")
        if options.requiretls:
            if not (caps.requiretls and self._encrypted):
                raise ExtensionRequiredError(
                    "REQUIRETLS needs a TLS session with a server offering it (RFC 8689)",
                    code=530,
                    enhanced="5.7.30",
                )
            params.append("REQUIRETLS")
        return tuple(params), tuple(dropped)

    def _bdat(self, txn: _Transaction, chunk: bytes, *, last: bool) -> None:
        argument = f"{len(chunk)} LAST" if last else str(len(chunk))
        line = command_line(Verb.BDAT, "BDAT " + argument)
        self._write(line + chunk, _Expect(Verb.BDAT, txn, int(last)))

    # -- output -----------------------------------------------------------------------------

    def _hello(self, verb: Verb) -> bytes:
        return command_line(verb, f"{verb.value} {self.config.helo_name}")

    def _write(self, line: bytes, expect: _Expect, command: Command | None = None) -> None:
        """Write now when pipelining (or nothing is outstanding), else hold it (RFC 2920)."""
        if expect.transaction is not None:
            expect.transaction.outstanding += 1
        if (self._expected or self._held) and not self.pipelining:
            self._held.append((line, expect))
            return
        self._emit(line, command, expect)

    def _emit(self, line: bytes, command: Command | None, expect: _Expect) -> None:
        self._out.append(line)
        self._expected.append(expect)
        if self._trace is not None:
            if expect.verb is Verb.BDAT:
                size = line.split(b"\r\n", 1)[0].decode()
                self._trace("C", f"{size} <message content>")
            elif command is not None:
                self._trace("C", command.for_trace())
            elif expect.verb is Verb.AUTH:
                self._trace("C", "<redacted>")
            else:
                self._trace("C", line.decode("utf-8", "replace").rstrip("\r\n"))

    def _release(self) -> None:
        """Without pipelining, send the next held command once nothing is outstanding."""
        if self._held and not self._expected:
            line, expect = self._held.popleft()
            self._emit(line, None, expect)

    # -- replies ----------------------------------------------------------------------------

    def _move(self, event: Input) -> None:
        self._state = transition(self._state, event)

    def _error(self) -> None:
        self._move(Input.PROTOCOL_ERROR)
        self._discard_unsent()

    def _discard_unsent(self) -> None:
        """Drop what was produced and not yet handed out: after a protocol error or a 421
        nothing more may go to the server."""
        self._out.clear()
        self._unsend_ends()

    def _unsend_ends(self) -> None:
        """An end of data that was produced but never handed out (not yet taken by
        data_to_send(), or held behind replies without PIPELINING) never left, so its
        outcome is not unknown: RFC 1047 concerns a dot that was sent."""
        unsent = [e for i, e in enumerate(self._expected) if i >= self._sent]
        for expect in unsent + [e for _, e in self._held]:
            ends_body = expect.verb is Verb.DOT or (expect.verb is Verb.BDAT and expect.index)
            if ends_body and expect.transaction is not None:
                expect.transaction.body_sent = False

    def _forget_outstanding(self) -> None:
        """The session is over: no reply will come for anything sent or held."""
        self._expected.clear()
        self._held.clear()
        self._inbox.clear()
        self._sent = 0
        self._current = None

    def _handle(self, reply: Reply) -> None:
        self._replies += 1
        code = reply.code
        if code == 421:  # a server may announce shutdown at any time, even unasked (RFC 5321 3.8)
            self._server_closing(reply)
            return
        if not self._expected:
            raise RemoteProtocolError(f"reply with no command outstanding: {reply}")
        expect = self._expected.popleft()
        self._sent -= 1
        txn = expect.transaction
        if txn is not None:
            txn.outstanding -= 1
        verb = expect.verb
        if 300 <= code < 400 and verb is not VERB_DATA and verb is not VERB_AUTH:
            raise RemoteProtocolError(f"unexpected {code} reply to {verb.value}")
        _HANDLERS[verb](self, reply, expect)
        if self._held:
            self._release()

    def _on_greeting(self, reply: Reply, _: _Expect) -> None:
        if reply.is_positive:
            self._move(Input.GREETING_OK)
            self._events.append(Greeted(reply))
            self._write(self._hello(Verb.EHLO), _Expect(Verb.EHLO))
        else:
            self._refused(Input.GREETING_REFUSED, reply)

    def _on_ehlo(self, reply: Reply, _: _Expect) -> None:
        if reply.is_positive:
            self._ready(Capabilities.from_ehlo(reply), reply)
        elif reply.is_permanent and self.config.helo_fallback and not self._encrypted:
            self._move(Input.HELLO_RETRY)
            self._write(self._hello(Verb.HELO), _Expect(Verb.HELO))
        else:
            self._refused(Input.HELLO_REFUSED, reply)

    def _on_helo(self, reply: Reply, _: _Expect) -> None:
        if reply.is_positive:
            self._ready(Capabilities(), reply)
        else:
            self._refused(Input.HELLO_REFUSED, reply)

    def _ready(self, capabilities: Capabilities, reply: Reply) -> None:
        self._move(Input.HELLO_OK)
        self._set_capabilities(capabilities)
        self._parser.enhanced_status_codes = capabilities.enhanced_status_codes
        self._events.append(Ready(capabilities, reply, self._encrypted))

    def _set_capabilities(self, capabilities: Capabilities) -> None:
        # Asked for every transaction: worked out once per EHLO.
        self._capabilities = capabilities
        self._pipelining = self.config.pipelining and capabilities.pipelining
        self._size_limit = capabilities.size
        self._offers_size = "SIZE" in capabilities
        self._offers_dsn = capabilities.dsn
        self._use_bdat = self.config.chunking and capabilities.chunking

    def _refused(self, event: Input, reply: Reply) -> None:
        self._move(event)
        self._events.append(SessionRefused(reply))
        self._write(_QUIT, _Expect(Verb.QUIT))

    def _on_starttls(self, reply: Reply, _: _Expect) -> None:
        if reply.code != 220:
            self._move(Input.STARTTLS_REFUSED)
            self._events.append(TLSRefused(reply))
            return
        # RFC 3207 5 and the NO STARTTLS study: nothing may follow the 220 in cleartext.
        if self._parser.pending or self._inbox or self._expected:
            raise ResponseInjectionError("data received after 220 to STARTTLS, before TLS")
        self._move(Input.STARTTLS_OK)
        self._events.append(TLSRequested())

    def _on_auth(self, reply: Reply, _: _Expect) -> None:
        mechanism = self._mechanism
        assert mechanism is not None
        if reply.code == 334:
            self._auth_rounds += 1
            if self._auth_rounds > MAX_AUTH_ROUNDS:
                raise RemoteProtocolError(f"more than {MAX_AUTH_ROUNDS} AUTH challenges")
            try:
                challenge = base64.b64decode(reply.lines[0].strip(), validate=True)
            except binascii.Error:
                raise RemoteProtocolError("AUTH challenge is not base64") from None
            answer = base64.b64encode(mechanism.respond(challenge)).decode("ascii")
            self._move(Input.AUTH_CHALLENGE)
            command = Command(Verb.AUTH, "", (answer,), sensitive=True)
            self._write(command.to_bytes(), _Expect(Verb.AUTH), command)
            return
        self._mechanism = None
        if reply.code == 235:
            mechanism.succeeded()
            self._move(Input.AUTH_DONE)
            self._events.append(Authenticated(reply))
        elif reply.is_positive or reply.is_intermediate:
            raise RemoteProtocolError(f"unexpected {reply.code} reply to AUTH")
        else:
            self._move(Input.AUTH_DONE)
            self._events.append(AuthenticationFailed(reply))

    def _on_mail(self, reply: Reply, expect: _Expect) -> None:
        txn = expect.transaction
        assert txn is not None
        txn.mail_reply = reply
        if not 200 <= reply.code < 300:  # is_positive, without a property call per message
            self._fail(txn, reply)

    def _on_rcpt(self, reply: Reply, expect: _Expect) -> None:
        txn = expect.transaction
        assert txn is not None
        txn.rcpt_replies[expect.index] = reply
        if 200 <= reply.code < 300:
            txn.accepted += 1
        if not txn.accepted and expect.index == len(txn.rcpt_replies) - 1 and txn.mail_ok:
            # Every recipient refused: nothing to send (RFC 2920 3.1 lets DATA fail for it).
            self._fail(txn, reply)

    def _on_data(self, reply: Reply, expect: _Expect) -> None:
        txn = expect.transaction
        assert txn is not None
        if reply.code == 354:
            if txn.failure is not None or not txn.accepted:
                # RFC 2920 3.1: DATA accepted after every RCPT failed; end it at once.
                txn.body_sent = True
                self._out.append(b".\r\n")
                txn.outstanding += 1
                self._expected.append(_Expect(VERB_DOT, txn))
                self._fail(txn, txn.failure or reply)
                return
            if txn.content is not None:
                self._out.append(txn.content)
                txn.content = None
                txn.body_sent = True
                txn.outstanding += 1
                self._expected.append(_Expect(VERB_DOT, txn))
                if self._trace is not None:
                    self._trace("C", f"<{txn.size} octets of message content>")
                    self._trace("C", ".")
                self._body_out(txn)
                return
            txn.body_requested = True
            self._events.append(BodyRequested(txn.id))
        elif reply.is_positive or reply.is_intermediate:
            # Anything but 354 to DATA means the stream is out of step (docs/security.md).
            raise RemoteProtocolError(f"unexpected {reply.code} reply to DATA")
        else:
            self._fail(txn, reply)

    def _on_dot(self, reply: Reply, expect: _Expect) -> None:
        txn = expect.transaction
        assert txn is not None
        txn.final_reply = reply
        self._settle(txn)

    def _on_bdat(self, reply: Reply, expect: _Expect) -> None:
        txn = expect.transaction
        assert txn is not None
        if expect.index:  # the LAST chunk: its reply is the final one
            txn.final_reply = reply
            self._settle(txn)
        elif not reply.is_positive:
            self._fail(txn, reply)

    def _on_simple(self, reply: Reply, expect: _Expect) -> None:
        if expect.verb is Verb.QUIT:
            self._move(Input.QUIT_REPLY)
            self._events.append(Closed())

    # -- transaction outcomes ---------------------------------------------------------------

    def _fail(self, txn: _Transaction, reply: Reply) -> None:
        """The transaction cannot succeed: stop sending for it, and let the session go on."""
        if txn.failure is None:
            txn.failure = reply
            self._held = deque(h for h in self._held if h[1].transaction is not txn)
            txn.outstanding = sum(1 for e in self._expected if e.transaction is txn)
            if txn.mail_ok and self._held:
                # The server may still hold the envelope, and the next transaction's MAIL
                # already waits (BDAT without PIPELINING): RSET goes out before it.
                self._held.appendleft((_RSET, _Expect(Verb.RSET)))
            elif txn.mail_ok:
                self._needs_reset = True  # the server may still hold the envelope
        # The session goes on only once no DATA reply is due for it: a late 354 would make
        # whatever we sent next part of the message content.
        if (
            self._current is txn
            and not txn.body_requested
            and not any(e.verb is Verb.DATA and e.transaction is txn for e in self._expected)
        ):
            self._current = None
            self._move(Input.TRANSACTION_FAILED)
        self._settle(txn)

    def _settle(self, txn: _Transaction) -> None:
        """Complete ``txn`` once no reply is outstanding and the caller is done with it."""
        if txn.outstanding or txn is self._current or txn not in self._transactions:
            return
        self._complete(txn, None, unknown=False)

    def _complete(
        self, txn: _Transaction, override: Reply | None, *, unknown: bool, distrust: bool = False
    ) -> None:
        results = []
        for recipient, rcpt_reply in zip(txn.envelope.recipients, txn.rcpt_replies, strict=True):
            reply = override if distrust and override else _decide(txn, rcpt_reply, override)
            lost = unknown and reply is override
            results.append(RecipientResult(recipient.address, Status.of(reply), reply, lost))
        self._transactions.remove(txn)
        result = TransactionResult(
            txn.id, txn.envelope, tuple(results), txn.mail_reply, txn.final_reply, txn.dropped
        )
        self._events.append(TransactionCompleted(result))

    def _server_closing(self, reply: Reply) -> None:
        self._discard_unsent()
        for txn in list(self._transactions):
            self._complete(txn, reply, unknown=False)
        self._forget_outstanding()
        self._move(Input.SERVER_CLOSING)
        self._events.append(ServerClosing(reply))


def _may_be_421(parser: ReplyParser) -> bool:
    """Whether the incomplete reply may yet be a 421, which a server may send unasked."""
    return b"421".startswith(parser.partial_code)


def _decide(txn: _Transaction, rcpt_reply: Reply | None, override: Reply | None) -> Reply:
    """The reply that decides one recipient's outcome."""
    # Once per recipient: the codes compared here rather than through Reply.is_positive.
    mail_reply = txn.mail_reply
    if mail_reply is not None and not 200 <= mail_reply.code < 300:
        return mail_reply
    if rcpt_reply is not None and not 200 <= rcpt_reply.code < 300:
        return rcpt_reply
    if txn.failure is not None:
        return txn.failure
    if override is not None:
        return override
    assert txn.final_reply is not None
    return txn.final_reply


def _path(address: object) -> str:
    return "<>" if address is None else f"<{address}>"


_HANDLERS: dict[Verb, Callable[[ClientConnection, Reply, _Expect], None]] = {
    Verb.GREETING: ClientConnection._on_greeting,
    Verb.EHLO: ClientConnection._on_ehlo,
    Verb.HELO: ClientConnection._on_helo,
    Verb.STARTTLS: ClientConnection._on_starttls,
    Verb.AUTH: ClientConnection._on_auth,
    Verb.MAIL: ClientConnection._on_mail,
    Verb.RCPT: ClientConnection._on_rcpt,
    Verb.DATA: ClientConnection._on_data,
    Verb.DOT: ClientConnection._on_dot,
    Verb.BDAT: ClientConnection._on_bdat,
    Verb.RSET: ClientConnection._on_simple,
    Verb.NOOP: ClientConnection._on_simple,
    Verb.QUIT: ClientConnection._on_simple,
}
