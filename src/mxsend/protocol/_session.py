"""A session plan: what a client does next after each event, with no I/O.

:class:`SessionDriver` runs messages through one :class:`ClientConnection`: STARTTLS when
asked, AUTH when given a mechanism, then one transaction per message, pipelining the next
transaction (or QUIT) behind each final dot. I/O layers call :meth:`SessionDriver.handle` with
every event and write whatever the connection then has to send.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from mxsend.protocol._auth import Mechanism
from mxsend.protocol._connection import ClientConnection
from mxsend.protocol._encoder import MAX_LINE_OCTETS, LinePolicy, has_long_line
from mxsend.protocol._errors import (
    ExtensionRequiredError,
    LineTooLongError,
    LocalProtocolError,
    MessageTooLargeError,
)
from mxsend.protocol._events import (
    Authenticated,
    AuthenticationFailed,
    BodyRequested,
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
from mxsend.protocol._state import State

__all__ = ["Message", "SessionDriver"]


@dataclass(frozen=True, slots=True)
class Message:
    """An envelope and its content (any line endings; the encoder makes them canonical)."""

    envelope: Envelope
    content: bytes


class SessionDriver:
    """Drives one connection through ``messages``.

    ``require_tls`` refuses to go on in cleartext (the caller must then close and defer);
    ``starttls`` tries STARTTLS when offered. ``tls_failed`` is set when TLS was required
    and could not be had, ``auth_failed`` holds the reply of a refused AUTH.
    """

    def __init__(
        self,
        connection: ClientConnection,
        messages: Iterable[Message],
        *,
        starttls: bool = True,
        require_tls: bool = False,
        mechanism: Mechanism | None = None,
    ) -> None:
        self.connection = connection
        self._messages: deque[Message] = deque(messages)
        self._bodies: dict[int, bytes] = {}
        self._starttls = starttls or require_tls
        self._require_tls = require_tls
        self._mechanism = mechanism
        self.results: list[TransactionResult] = []
        self.tls_failed: Reply | None = None
        self.auth_failed: Reply | None = None
        self._quitting = False

    @property
    def unsent(self) -> tuple[Message, ...]:
        """Messages no transaction was begun for."""
        return tuple(self._messages)

    def handle(self, event: Event) -> None:
        conn = self.connection
        if isinstance(event, Ready):
            if not event.encrypted and self._starttls and event.capabilities.starttls:
                conn.start_tls()
            else:
                self._without_tls(event.encrypted, "the server does not offer STARTTLS")
        elif isinstance(event, TLSRequested):
            pass  # the I/O layer starts TLS, then calls connection.tls_established()
        elif isinstance(event, TLSRefused):
            # A refusal's code is not trusted: a man in the middle can forge a 5xx (SECURITY 3).
            self._without_tls(False, f"the server refused STARTTLS: {event.reply}")
        elif isinstance(event, Authenticated):
            self._next()
        elif isinstance(event, AuthenticationFailed):
            self.auth_failed = event.reply
            self._quit()
        elif isinstance(event, BodyRequested):
            conn.send_body(self._bodies.pop(event.transaction_id))
            conn.end_body()
            self._next()
        elif isinstance(event, TransactionCompleted):
            self._bodies.pop(event.result.transaction_id, None)
            self.results.append(event.result)
            self._next()

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
            # Cleartext channel (SECURITY 4: credentials never cross it) or a mechanism the
            # server does not offer: defer, saying why.
            self.auth_failed = Reply.synthesized(451, "4.7.0", str(refusal))
            self._quit()

    def _next(self) -> None:
        """Begin the next transaction if the session can take one; QUIT when all are done."""
        conn = self.connection
        while self._messages and conn.state is State.READY:
            message = self._messages.popleft()
            try:
                self._check_lines(message.content)
                ident = conn.begin_transaction(message.envelope)
            except (ExtensionRequiredError, MessageTooLargeError, LineTooLongError) as refusal:
                self.results.append(_refused(message.envelope, refusal.reply))
                continue
            self._bodies[ident] = message.content
            return
        if not self._messages and conn.state is State.READY:
            self._quit()

    def _check_lines(self, content: bytes) -> None:
        # Refused before the transaction: mid-DATA, only aborting the session would be left.
        if self.connection.config.line_policy is LinePolicy.REJECT and has_long_line(content):
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
