"""A session plan: what a client does next after each event, with no I/O.

:class:`SessionDriver` runs messages through one :class:`ClientConnection`: STARTTLS when
asked, AUTH when given a mechanism, then one transaction per message, pipelining the next
transaction (or QUIT) behind each final dot; with BDAT, a message whose content goes with its
envelope waits for the final reply of the one before, so one outcome at most is ever unknown.
I/O layers call :meth:`SessionDriver.handle` with every event and write whatever the
connection then has to send.

Content held in memory and small goes with its transaction: the connection sends it. Any
other content (a file, chunks, large bytes) is left to the I/O layer, which streams it with
flow control: while :attr:`SessionDriver.streaming` is set it feeds
``connection.send_body()`` chunk by chunk, then calls :meth:`~SessionDriver.end_stream`, or
:meth:`~SessionDriver.fail_stream` and aborts the connection when the content cannot be read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from mxsend.protocol._auth import Mechanism
from mxsend.protocol._connection import ClientConnection
from mxsend.protocol._content import Content
from mxsend.protocol._encoder import MAX_LINE_OCTETS, LinePolicy, has_long_line
from mxsend.protocol._errors import (
    ContentError,
    ExtensionRequiredError,
    LineTooLongError,
    LocalProtocolError,
    MessageTooLargeError,
)
from mxsend.protocol._events import (
    Authenticated,
    AuthenticationFailed,
    BodyRequested,
    BodySent,
    Event,
    Ready,
    RecipientResult,
    Status,
    TLSRefused,
    TLSRequested,
    TransactionCompleted,
    TransactionResult,
)
from mxsend.protocol._options import Envelope
from mxsend.protocol._reply import Reply
from mxsend.protocol._state import READY, State
from mxsend.protocol._values import fast_init

__all__ = ["INLINE_BODY", "Message", "SessionDriver"]

#: In-memory content up to this size is encoded and written in one go; larger content is
#: streamed like a file, so the transport never holds a second copy of a large message.
INLINE_BODY = 262144


@fast_init
@dataclass(frozen=True, slots=True)
class Message:
    """An envelope and its content: bytes, or a :class:`Content` source read in chunks when
    sent (any line endings; the encoder makes them canonical)."""

    envelope: Envelope
    content: bytes | Content


def content_failure(error: ContentError | LineTooLongError) -> Reply:
    """The local reply for content that could not be sent: a line too long is permanent
    (as refused up front), unreadable or changed content is transient (RFC 3463 4.3.0)."""
    if isinstance(error, LineTooLongError):
        return error.reply
    return Reply.synthesized(451, "4.3.0", str(error))


class SessionDriver:
    """Drives one connection through ``messages``.

    ``require_tls`` refuses to go on in cleartext (the caller must then close and defer);
    ``starttls`` tries STARTTLS when offered. Each transaction's result goes to
    ``on_result(position, result)`` and, unless ``keep_results`` is False, to
    :attr:`results`. ``tls_failed`` is set when TLS was required and could not be had,
    ``auth_failed`` holds the reply of a refused AUTH.
    """

    def __init__(
        self,
        connection: ClientConnection,
        messages: Iterable[Message],
        *,
        starttls: bool = True,
        require_tls: bool = False,
        mechanism: Mechanism | None = None,
        on_result: Callable[[int, TransactionResult], None] | None = None,
        keep_results: bool = True,
    ) -> None:
        self.connection = connection
        #: Called with (position, result) as each transaction's outcome is known, so that a
        #: queue can make it durable before the next one (the duplicate a crash can cause is
        #: then bounded to the transaction in flight).
        self.on_result = on_result
        # With keep_results False, on_result alone sees each result: a long session then
        # holds none of them (results and positions stay empty).
        self._keep_results = keep_results
        self._messages: deque[Message] = deque(messages)
        self._taken = 0  # how many have left _messages: the next one's position
        self._positions: dict[int, int] = {}  # transaction id -> position in ``messages``
        self._bodies: dict[int, bytes | Content] = {}
        #: ``(transaction id, content)`` the I/O layer must stream now, or None.
        self.streaming: tuple[int, Content] | None = None
        self._content_failed: dict[int, Reply] = {}
        #: Positions of the messages refused here before any command (too large, a missing
        #: extension, a long line), and of those whose content could not be sent whole (the
        #: session was cut for them).
        self.refused_positions: set[int] = set()
        self.content_positions: set[int] = set()
        self._starttls = starttls or require_tls
        self._require_tls = require_tls
        self._mechanism = mechanism
        self.results: list[TransactionResult] = []
        #: The position in ``messages`` of the message each of :attr:`results` is for.
        self.positions: list[int] = []
        self.tls_failed: Reply | None = None
        self.auth_failed: Reply | None = None
        self._quitting = False

    @property
    def unsent(self) -> tuple[Message, ...]:
        """Messages no transaction was begun for."""
        return tuple(self._messages)

    @property
    def unsent_positions(self) -> tuple[int, ...]:
        """The positions in ``messages`` of :attr:`unsent`."""
        return tuple(range(self._taken, self._taken + len(self._messages)))

    def handle(self, event: Event) -> None:
        conn = self.connection
        # The events of every message first: the others come once a session.
        if isinstance(event, BodyRequested):
            # Only content to stream is asked for: small content went with its transaction.
            body = self._bodies.pop(event.transaction_id)
            self.streaming = (event.transaction_id, Content.of(body))
        elif isinstance(event, BodySent):
            self._next()
        elif isinstance(event, TransactionCompleted):
            result = event.result
            self._bodies.pop(result.transaction_id, None)
            failure = self._content_failed.pop(result.transaction_id, None)
            if failure is not None:
                result = _with_failure(result, failure)
            self._result(self._positions.pop(result.transaction_id), result)
            self._next()
        elif isinstance(event, Ready):
            if not event.encrypted and self._starttls and event.capabilities.starttls:
                conn.start_tls()
            else:
                self._without_tls(event.encrypted, "the server does not offer STARTTLS")
        elif isinstance(event, TLSRequested):
            pass  # the I/O layer starts TLS, then calls connection.tls_established()
        elif isinstance(event, TLSRefused):
            # A refusal's code is not trusted: a man in the middle can forge a 5xx (RFC 3207 6).
            self._without_tls(False, f"the server refused STARTTLS: {event.reply}")
        elif isinstance(event, Authenticated):
            self._next()
        elif isinstance(event, AuthenticationFailed):
            self.auth_failed = event.reply
            self._quit()

    def end_stream(self) -> None:
        """The streamed content has all been given to ``send_body()``: end it, go on."""
        assert self.streaming is not None
        self.streaming = None
        self.connection.end_body()
        self._next()

    def send_stream(self) -> bool:
        """Send the content left to stream in one go, for callers with no flow control (an
        in-memory conversation, a test). Returns False when it could not be sent whole: the
        caller must then close the connection, as :meth:`fail_stream` says."""
        assert self.streaming is not None
        try:
            for chunk in self.streaming[1].chunks():
                self.connection.send_body(chunk)
        except (ContentError, LineTooLongError) as exc:
            self.fail_stream(exc)
            return False
        self.end_stream()
        return True

    def fail_stream(self, error: ContentError | LineTooLongError) -> Reply:
        """The streamed content could not be sent whole. The I/O layer must abort the
        connection (no end of data may follow part of a body); the transaction's recipients
        then get the returned local reply instead of "connection lost"."""
        assert self.streaming is not None
        reply = content_failure(error)
        self._content_failed[self.streaming[0]] = reply
        self.content_positions.add(self._positions[self.streaming[0]])
        self.streaming = None
        return reply

    def _without_tls(self, encrypted: bool, why: str) -> None:
        """Go on without (more) STARTTLS: defer everything if TLS was required, else AUTH
        when asked to, then the messages."""
        if not encrypted and self._require_tls:
            self.tls_failed = Reply.synthesized(451, "4.7.10", f"TLS is required and {why}")
            self._quit()
        elif self._mechanism is not None:
            self._authenticate()
        else:
            self._next()

    def _authenticate(self) -> None:
        assert self._mechanism is not None
        try:
            self.connection.authenticate(self._mechanism)
        except LocalProtocolError as refusal:
            # Cleartext channel (RFC 4954 4: credentials never cross it) or a mechanism the
            # server does not offer: defer, saying why.
            self.auth_failed = Reply.synthesized(451, "4.7.0", str(refusal))
            self._quit()

    def _result(self, position: int, result: TransactionResult) -> None:
        if self._keep_results:
            self.results.append(result)
            self.positions.append(position)
        if self.on_result is not None:
            self.on_result(position, result)

    def _next(self) -> None:
        """Begin the next transaction if the session can take one; QUIT when all are done."""
        conn = self.connection
        while self._messages and conn.state is READY:
            message = self._messages.popleft()
            data = _in_memory(message.content)
            if data is not None and len(data) > INLINE_BODY:
                data = None  # streamed with flow control, like a file
            if data is not None and conn.chunking and not conn.earlier_settled:
                # A BDAT LAST leaves with its envelope, so each would be sent without waiting
                # for any reply: as with DATA (whose content waits for its 354, behind the
                # final reply before it), one message's outcome at most is unknown at a time,
                # and what waits in the transport is one message, not the whole share.
                self._messages.appendleft(message)
                return
            position = self._taken
            self._taken += 1
            try:
                if data is None:
                    self._check_lines(message.content)
                # Small content goes with the transaction: the connection encodes it once
                # (refusing a long line before any command) and sends it by itself.
                ident = conn.begin_transaction(message.envelope, data)
            except (ExtensionRequiredError, MessageTooLargeError, LineTooLongError) as refusal:
                self.refused_positions.add(position)
                self._result(position, _refused(message.envelope, refusal.reply))
                continue
            if data is None:
                self._bodies[ident] = message.content
            self._positions[ident] = position
            return
        if not self._messages and conn.state is READY:
            self._quit()

    def _check_lines(self, content: bytes | Content) -> None:
        # Refused before the transaction: mid-DATA, only aborting the session would be left.
        # Streamed content is checked from its scan; unscanned, the encoder catches it.
        if self.connection.config.line_policy is not LinePolicy.REJECT:
            return
        data = _in_memory(content)
        if data is not None:
            long_line = has_long_line(data)
        else:
            assert isinstance(content, Content)
            long_line = content.info is not None and content.info.long_lines > 0
        if long_line:
            raise LineTooLongError(f"message has a line over {MAX_LINE_OCTETS} octets")

    def _quit(self) -> None:
        if not self._quitting and self.connection.state is State.READY:
            self._quitting = True
            self.connection.quit()


def _refused(envelope: Envelope, reply: Reply) -> TransactionResult:
    """A transaction the server cannot take, refused before any byte was sent."""
    status = Status.of(reply)
    recipients = tuple(RecipientResult(r.address, status, reply) for r in envelope.recipients)
    return TransactionResult(0, envelope, recipients, None, None)


def _in_memory(body: bytes | Content) -> bytes | None:
    return body if isinstance(body, bytes) else body.in_memory


def _with_failure(result: TransactionResult, failure: Reply) -> TransactionResult:
    """``result`` with the local ``failure`` for every recipient the connection's loss decided
    (those the server refused keep its reply)."""
    recipients = tuple(
        RecipientResult(r.recipient, Status.of(failure), failure) if r.reply.local else r
        for r in result.recipients
    )
    return replace(result, recipients=recipients)
