"""The thin Twisted adapter: bytes from the transport feed the core, what the core produces
goes to the transport, events go to the session driver.

Message content that the driver leaves to stream is pulled from its source one chunk at a
time, as the transport asks for more (Twisted's pull-producer API): a slow server makes the
client wait, never buffer the file. Each written chunk must be taken by the server within the
``block`` deadline (RFC 5321 4.5.3.2.5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHandshakeListener,
    IPullProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from mxsend.model import FailureKind
from mxsend.options import Timeouts
from mxsend.protocol import (
    ClientConnection,
    ContentError,
    LineTooLongError,
    ProtocolError,
    Reply,
    ServerClosing,
    SessionDriver,
    SessionRefused,
    State,
    TLSRequested,
)
from mxsend.protocol._state import CLOSED  # State.CLOSED without the enum lookup hook
from mxsend.twisted._tls import ClientTLS

__all__ = ["SMTPClientProtocol", "SessionOutcome"]

_HANDSHAKE = "TLS handshake"  # what awaits while STARTTLS's handshake runs
_SESSION_EVENTS = frozenset({TLSRequested, SessionRefused, ServerClosing})
_LOST = Failure(ConnectionError("connection closed"))  # type: ignore[no-untyped-call]


@dataclass
class SessionOutcome:
    """How one SMTP session went, beyond the transactions the driver recorded."""

    refused: Reply | None = None  #: greeting or EHLO refused
    closing: Reply | None = None  #: 421
    error: str | None = None  #: protocol error, time-out or lost connection, for people
    failure: FailureKind | None = None  #: what ``error`` was, for programs
    tls: ClientTLS | None = None
    tls_handshake_failed: bool = False
    transcript: list[str] = field(default_factory=list)


@implementer(IHandshakeListener, IPullProducer)
class SMTPClientProtocol(Protocol):
    """Runs one :class:`SessionDriver` over a transport. ``done`` fires with the
    :class:`SessionOutcome` when the connection is gone. While content streams, it is the
    transport's pull producer."""

    def __init__(
        self,
        connection: ClientConnection,
        driver: SessionDriver,
        *,
        clock: IReactorTime,
        timeouts: Timeouts,
        starttls: Callable[[], ClientTLS] | None,
        implicit_tls: ClientTLS | None = None,
    ) -> None:
        self._conn = connection
        self._driver = driver
        self._clock = clock
        self._timeouts = timeouts
        self._starttls = starttls
        self.outcome = SessionOutcome(tls=implicit_tls)
        self.done: Deferred[SessionOutcome] = Deferred()
        self._deadline: tuple[tuple[int, str], IDelayedCall] | None = None
        self._abort_reason: str | None = None
        self._tls_started = implicit_tls is not None  # on port 465 the handshake comes first
        self._handshaking = False
        self._chunks: Iterator[bytes] | None = None  # the content being streamed
        self._block: IDelayedCall | None = None  # deadline for the chunk last written
        self._seconds: dict[str, float] = {}  # stage -> its timeout, looked up once

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._reschedule()

    def dataReceived(self, data: bytes) -> None:
        self._handshaking = False  # bytes through TLS: the handshake is done
        self._conn.receive_data(data)
        self._pump()

    def handshakeCompleted(self) -> None:
        self._handshaking = False
        self._reschedule()

    def connectionLost(self, reason: Failure = _LOST) -> None:
        self._cancel_deadline()
        self._close_stream()
        detail = self._abort_reason or _describe(reason)
        if self._tls_started and (
            self.outcome.tls is None or self.outcome.tls.info.version is None
        ):
            self.outcome.tls_handshake_failed = True
            detail = self._abort_reason or f"TLS handshake failed: {_describe(reason)}"
            self.outcome.failure = self.outcome.failure or FailureKind.TLS_HANDSHAKE
        if self._conn.state is not State.CLOSED:
            self.outcome.error = self.outcome.error or detail
            self.outcome.failure = self.outcome.failure or FailureKind.LOST
        self._conn.connection_lost(detail)
        try:
            with contextlib.suppress(ProtocolError):  # the connection is already gone
                self._drain()
        finally:
            # Fired whatever a caller's callback raised: the delivery waits on it.
            self.done.callback(self.outcome)

    def _pump(self) -> None:
        try:
            self._drain()
        except ProtocolError as exc:
            self._abort(f"protocol error: {exc}", FailureKind.PROTOCOL)
            return
        assert self.transport is not None
        out = self._conn.data_to_send()
        if out:
            write_now(self.transport, out)
        if self._conn.state is CLOSED:
            self._close_stream()  # a 421 mid-body: the rest has nowhere to go
            self.transport.loseConnection()
        elif self._driver.streaming is not None and self._chunks is None and self._may_stream():
            self._start_stream()
        self._reschedule()

    # -- streaming content --------------------------------------------------------------------

    def _may_stream(self) -> bool:
        # Content starts once no earlier message's final reply is due. Content read from a
        # file or chunks may fail midway, which costs the connection; and under BDAT, content
        # goes without a 354, so any kind would leave a second outcome unknown (as the
        # driver's inline messages wait too). After DATA's 354 every earlier reply has come.
        return self._conn.earlier_settled

    def _start_stream(self) -> None:
        assert self._driver.streaming is not None and self.transport is not None
        try:
            self._chunks = self._driver.streaming[1].chunks()
        except ContentError as exc:
            self._stream_failed(exc)
            return
        # A pull producer: the transport calls resumeProducing each time it has written
        # what it holds, so at most about one chunk is ever buffered here.
        cast(IConsumer, self.transport).registerProducer(self, False)

    def resumeProducing(self) -> None:
        self._cancel_block()
        chunks, conn = self._chunks, self._conn
        if chunks is None or self.transport is None:
            return
        if conn.state is not State.MAIL:  # the session ended under the stream
            self._close_stream()
            return
        try:
            while not conn.body_refused:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                conn.send_body(chunk)
                out = conn.data_to_send()
                if out:  # BDAT holds one chunk back, and a lone CR waits for its LF
                    self.transport.write(out)
                    self._block = self._clock.callLater(self._timeouts.block, self._block_timed_out)
                    return
        except (ContentError, LineTooLongError) as exc:
            self._stream_failed(exc)
            return
        self._finish_stream()

    def stopProducing(self) -> None:
        self._close_stream()

    def _finish_stream(self) -> None:
        self._close_stream()
        self._driver.end_stream()
        self._pump()

    def _stream_failed(self, error: ContentError | LineTooLongError) -> None:
        self._close_stream()
        reply = self._driver.fail_stream(error)
        # Part of the body may be out: only closing the connection keeps it from being
        # delivered (SMTP has no way to cancel DATA).
        self._abort(f"message content not sent: {reply.text}", FailureKind.CONTENT)

    def _close_stream(self) -> None:
        self._cancel_block()
        chunks, self._chunks = self._chunks, None
        if chunks is None:
            return
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a generator closes its file
        if self.transport is not None:
            cast(IConsumer, self.transport).unregisterProducer()

    def _cancel_block(self) -> None:
        if self._block is not None:
            if self._block.active():
                self._block.cancel()
            self._block = None

    def _block_timed_out(self) -> None:
        self._block = None
        self._abort(
            "timed out writing message content (the server stopped reading)", FailureKind.TIMEOUT
        )

    def _drain(self) -> None:
        next_event, handle = self._conn.next_event, self._driver.handle
        while (event := next_event()) is not None:
            if type(event) in _SESSION_EVENTS:  # a few per session; the rest go straight on
                if isinstance(event, TLSRequested):
                    self._start_tls()
                elif isinstance(event, SessionRefused):
                    self.outcome.refused = event.reply
                elif isinstance(event, ServerClosing):
                    self.outcome.closing = event.reply
            handle(event)

    def _start_tls(self) -> None:
        assert self._starttls is not None and self.transport is not None
        creator = self._starttls()
        self.outcome.tls = creator
        self._tls_started = True
        self._handshaking = True
        self.transport.startTLS(creator)  # type: ignore[attr-defined]
        self._conn.tls_established()

    def _reschedule(self) -> None:
        awaiting = self._conn.awaiting
        if awaiting is not None and self._handshaking:
            awaiting = (-1, _HANDSHAKE)  # under the starttls deadline until it completes
        deadline = self._deadline
        if deadline is not None and deadline[0] == awaiting:
            return
        if awaiting is None:
            self._cancel_deadline()
            return
        seconds = self._seconds.get(awaiting[1])
        if seconds is None:
            seconds = self._seconds[awaiting[1]] = self._timeouts.for_reply(awaiting[1])
        if deadline is not None and deadline[1].active():
            # Moving a pending call is cheaper than cancelling it and scheduling another.
            deadline[1].reset(seconds)
            self._deadline = (awaiting, deadline[1])
        else:
            self._deadline = (awaiting, self._clock.callLater(seconds, self._timed_out))

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline[1].active():
                self._deadline[1].cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        assert self._deadline is not None
        stage = self._deadline[0][1]
        self._deadline = None
        if stage == _HANDSHAKE:
            self._abort("timed out in the TLS handshake", FailureKind.TIMEOUT)
        else:
            self._abort(f"timed out waiting for the reply to {stage}", FailureKind.TIMEOUT)

    def _abort(self, reason: str, failure: FailureKind) -> None:
        self._abort_reason = reason
        self.outcome.error = self.outcome.error or reason
        self.outcome.failure = self.outcome.failure or failure
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


def write_now(transport: ITransport, data: bytes) -> None:
    """Write ``data`` to ``transport``, at once when it can be: on a plain TCP connection
    whose buffer is empty, one send(2) now instead of a turn of the reactor and two epoll
    updates (a pipelined group per message, so this is a cost per message). What send(2) does
    not take, and everything on any other transport (TLS, a test's), goes through
    ``transport.write()``, behind what it already holds: the order of bytes never changes."""
    tcp_client = transport if type(transport) is tcp.Client else None
    if (
        tcp_client is not None
        and getattr(tcp_client, "TLS", None) is False  # after STARTTLS, bytes go through TLS
        and tcp_client.connected
        and not tcp_client.disconnecting
        and tcp_client.producer is None
        and not tcp_client.dataBuffer
        # Twisted's own bookkeeping: nothing waits in its second buffer, the connection is
        # not being aborted (write() would drop the data then) and its writing side is open.
        and getattr(tcp_client, "_tempDataLen", None) == 0
        and getattr(tcp_client, "_aborting", None) is False
        and getattr(tcp_client, "_writeDisconnecting", None) is False
        and getattr(tcp_client, "_writeDisconnected", None) is False
    ):
        # What writeSomeData does, less its frames: send(2) retries EINTR itself (PEP 475).
        limit = tcp_client.SEND_LIMIT
        try:
            sent = tcp_client.socket.send(data if len(data) <= limit else memoryview(data)[:limit])
        except OSError:
            # Full (EWOULDBLOCK, ENOBUFS) or lost: Twisted's own write buffers it, or finds
            # the connection lost and closes it.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def _describe(reason: Failure) -> str:
    text = str(reason.value) or type(reason.value).__name__
    return f"connection lost: {text}"[:300]
