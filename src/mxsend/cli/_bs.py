"""``sendmail -bs``: SMTP on standard input and output, for local submission.

The session is :class:`mxsend.protocol.ServerConnection`; this is its I/O. Input is read
with partial reads (whatever is there, never a whole line or a fixed size waited for), so a
pipelining client is never deadlocked; replies are flushed after each batch. Content is
spooled to a temporary file as it arrives. Each message is handed to ``submit``, which
queues it durably, and only once it returns does the client get its 250 (RFC 5321 6.1, as
Postfix fsyncs before it answers).

A :class:`UserError` from ``submit`` refuses that message and the session goes on:

- DATAERR (65, the message or an address in it is unacceptable): ``554 5.6.0 REASON``
- USAGE (64, nothing that could be queued): ``554 5.5.4 REASON``
- any other status (TEMPFAIL, CANTCREAT, NOINPUT, CONFIG, SOFTWARE...): ``451 4.3.0 REASON``;
  the client keeps the message and tries again later.

Any other exception is a bug: the message gets ``451 4.3.0``, and the exception propagates.
End of input without QUIT ends the session with status 0 and any unfinished message is
dropped, never submitted: Postfix's ``smtpd -S`` (what its ``sendmail -bs`` runs) does the
same, and the client, having had no 250, still has the message.
"""

from __future__ import annotations

import os
import select
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from mxsend._exits import Exit
from mxsend.cli._common import UserError
from mxsend.protocol import (
    Body,
    MessageAborted,
    MessageData,
    MessageReceived,
    MessageStarted,
    ServerConfig,
    ServerConnection,
    SessionClosed,
)

__all__ = ["READ_SIZE", "Submission", "serve"]

READ_SIZE = 65536  # one partial read at most; the session bounds what it keeps of it
#: Seconds a client may send nothing, as Postfix's smtpd_timeout (300s).
IDLE_TIMEOUT = 300.0
_MAX_REASON = 200  # a reply line stays well under RFC 5321 4.5.3.1.5's 512 octets
# Statuses that mean the message itself will never do: a permanent refusal.
_PERMANENT = {Exit.DATAERR: "5.6.0", Exit.USAGE: "5.5.4"}


@dataclass(frozen=True)
class Submission:
    """One message received over SMTP, for ``submit`` to queue."""

    sender: str | None  #: None for the null sender <>
    recipients: tuple[str, ...]
    eight_bit: bool  #: BODY=8BITMIME was given
    smtputf8: bool  #: SMTPUTF8 was given
    #: the message as received: dot-unstuffed, CRLF line ends, a seekable temp file at 0
    content: BinaryIO


def serve(
    stdin: BinaryIO,
    stdout: BinaryIO,
    *,
    host: str,
    submit: Callable[[Submission], str],
    max_size: int = 50 * 1024 * 1024,
    timeout: float = IDLE_TIMEOUT,
) -> int:
    """Speak SMTP on stdin/stdout until QUIT or end of input; return the exit status (0).
    A client that sends nothing for ``timeout`` seconds is told so (421) and left."""
    server = ServerConnection(ServerConfig(host, max_message_size=max_size))
    session = _Session(server, stdout, submit)
    read = _reader(stdin, timeout)
    session.flush()
    while not server.closed and not session.gone:
        try:
            data = read(READ_SIZE)
        except _Idle:
            session.write(f"421 4.4.2 {host} Error: timeout exceeded\r\n".encode())
            break  # an unfinished message is dropped, as at the end of input
        except OSError:
            data = b""  # input unreadable: as if the client had gone
        server.receive_data(data)
        session.handle_events()
        session.flush()
    session.drop_spool()
    return int(Exit.OK)


class _Idle(Exception):
    """The client sent nothing for the whole idle timeout."""


def _reader(stdin: BinaryIO, timeout: float) -> Callable[[int], bytes]:
    """Partial reads: ``os.read`` on the descriptor, waiting at most ``timeout`` seconds for
    input (:class:`_Idle` then); without one, ``read1`` on a buffered stream, else ``read``."""
    try:
        descriptor = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        read1 = getattr(stdin, "read1", None)
        if callable(read1):
            return lambda size: bytes(read1(size))
        return stdin.read

    def read(size: int) -> bytes:
        ready, _, _ = select.select([descriptor], [], [], timeout)
        if not ready:
            raise _Idle
        return os.read(descriptor, size)

    return read


class _Session:
    """The events of one session, acted on: spool, submit, reply."""

    def __init__(
        self, server: ServerConnection, stdout: BinaryIO, submit: Callable[[Submission], str]
    ) -> None:
        self.server = server
        self.stdout = stdout
        self.submit = submit
        self.spool: BinaryIO | None = None
        self.spool_error: str | None = None
        self.gone = False  # standard output is closed: nobody to answer

    def flush(self) -> None:
        self.write(self.server.data_to_send())

    def write(self, out: bytes) -> None:
        if not out or self.gone:
            return
        try:
            self.stdout.write(out)
            self.stdout.flush()
        except OSError:  # BrokenPipeError: the client left; what is queued stays queued
            self.gone = True

    def handle_events(self) -> None:
        while (event := self.server.next_event()) is not None:
            if isinstance(event, MessageStarted):
                self.drop_spool()
                self.spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by drop_spool
                self.spool_error = None
            elif isinstance(event, MessageData):
                self._write(event.data)
            elif isinstance(event, MessageReceived):
                self._received(event)
            elif isinstance(event, MessageAborted | SessionClosed):
                self.drop_spool()

    def _write(self, data: bytes) -> None:
        if self.spool_error is not None:
            return
        assert self.spool is not None  # MessageStarted comes first
        try:
            self.spool.write(data)
        except OSError as exc:  # disk full: refused at the end of the message, not now
            self.spool_error = exc.strerror or type(exc).__name__

    def _received(self, event: MessageReceived) -> None:
        spool, error = self.spool, self.spool_error
        self.spool = None
        try:
            if spool is None or error is not None:
                self.server.refuse_message(451, "4.3.0", _one_line(f"cannot spool: {error}"))
                return
            self.flush()  # replies before the end of data need not wait for the queue
            envelope = event.envelope
            options = envelope.options
            submission = Submission(
                sender=None if envelope.sender is None else str(envelope.sender),
                recipients=tuple(str(r.address) for r in envelope.recipients),
                eight_bit=options.body is Body.EIGHT_BIT_MIME,
                smtputf8=options.smtputf8,
                content=spool,
            )
            spool.seek(0)
            self._submit(submission)
        finally:
            if spool is not None:
                spool.close()

    def _submit(self, submission: Submission) -> None:
        try:
            queue_id = self.submit(submission)
        except UserError as exc:
            enhanced = _PERMANENT.get(exc.status)
            if enhanced is not None:
                self.server.refuse_message(554, enhanced, _one_line(str(exc)))
            else:
                self.server.refuse_message(451, "4.3.0", _one_line(str(exc)))
            return
        except Exception:
            # A bug: the client must not think the message safe. Tell it, then let it out.
            self.server.refuse_message(451, "4.3.0", "Error: internal error")
            self.flush()
            raise
        self.server.accept_message(queue_id)

    def drop_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def _one_line(text: str) -> str:
    """``text`` as a reply's text: one line of printable ASCII, not too long."""
    words = " ".join(text.split())
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in words)
    if len(cleaned) > _MAX_REASON:
        cleaned = cleaned[: _MAX_REASON - 3] + "..."
    return cleaned or "Error"
