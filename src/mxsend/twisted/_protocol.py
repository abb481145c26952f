"""The thin Twisted adapter: bytes from the transport feed the core, what the core produces
goes to the transport, events go to the session driver (STYLE 9)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from mxsend.protocol import (
    ClientConnection,
    ProtocolError,
    Reply,
    ServerClosing,
    SessionDriver,
    SessionRefused,
    State,
    TLSRequested,
)
from mxsend.twisted._timeouts import Timeouts
from mxsend.twisted._tls import ClientTLS

__all__ = ["SMTPClientProtocol", "SessionOutcome", "Timeouts"]

_CLOSED = Failure(ConnectionError("connection closed"))  # type: ignore[no-untyped-call]


@dataclass
class SessionOutcome:
    """How one SMTP session went, beyond the transactions the driver recorded."""

    refused: Reply | None = None  #: greeting or EHLO refused
    closing: Reply | None = None  #: 421
    error: str | None = None  #: protocol error, time-out or lost connection
    tls: ClientTLS | None = None
    tls_handshake_failed: bool = False
    transcript: list[str] = field(default_factory=list)


class SMTPClientProtocol(Protocol):
    """Runs one :class:`SessionDriver` over a transport. ``done`` fires with the
    :class:`SessionOutcome` when the connection is gone."""

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
        self._tls_started = False

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._reschedule()

    def dataReceived(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._pump()

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        self._cancel_deadline()
        detail = self._abort_reason or _describe(reason)
        if self._tls_started and (
            self.outcome.tls is None or self.outcome.tls.info.version is None
        ):
            self.outcome.tls_handshake_failed = True
            detail = self._abort_reason or f"TLS handshake failed: {_describe(reason)}"
        if self._conn.state is not State.CLOSED:
            self.outcome.error = self.outcome.error or detail
        self._conn.connection_lost(detail)
        with contextlib.suppress(ProtocolError):  # the connection is already gone
            self._drain()
        self.done.callback(self.outcome)

    def _pump(self) -> None:
        try:
            self._drain()
        except ProtocolError as exc:
            self.outcome.error = f"protocol error: {exc}"
            self._abort(self.outcome.error)
            return
        assert self.transport is not None
        out = self._conn.data_to_send()
        if out:
            self.transport.write(out)
        if self._conn.state is State.CLOSED:
            self.transport.loseConnection()
        self._reschedule()

    def _drain(self) -> None:
        while (event := self._conn.next_event()) is not None:
            if isinstance(event, TLSRequested):
                self._start_tls()
            elif isinstance(event, SessionRefused):
                self.outcome.refused = event.reply
            elif isinstance(event, ServerClosing):
                self.outcome.closing = event.reply
            self._driver.handle(event)

    def _start_tls(self) -> None:
        assert self._starttls is not None and self.transport is not None
        creator = self._starttls()
        self.outcome.tls = creator
        self._tls_started = True
        self.transport.startTLS(creator)  # type: ignore[attr-defined]
        self._conn.tls_established()

    def _reschedule(self) -> None:
        awaiting = self._conn.awaiting
        if self._deadline is not None and self._deadline[0] == awaiting:
            return
        self._cancel_deadline()
        if awaiting is not None:
            stage = awaiting[1]
            call = self._clock.callLater(self._timeouts.for_reply(stage), self._timed_out, stage)
            self._deadline = (awaiting, call)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline[1].active():
                self._deadline[1].cancel()
            self._deadline = None

    def _timed_out(self, stage: str) -> None:
        self._deadline = None
        self.outcome.error = f"timed out waiting for the reply to {stage}"
        self._abort(self.outcome.error)

    def _abort(self, reason: str) -> None:
        self._abort_reason = reason
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


def _describe(reason: Failure) -> str:
    text = str(reason.value) or type(reason.value).__name__
    return f"connection lost: {text}"[:300]
