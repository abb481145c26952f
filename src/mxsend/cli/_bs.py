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
A spool that cannot be created, written, flushed or rewound (a full disk) refuses that message
with ``451 4.3.0`` and the session goes on.
End of input without QUIT ends the session with status 0 and any unfinished message is
dropped, never submitted: Postfix's ``smtpd -S`` (what its ``sendmail -bs`` runs) does the
same, and the client, having had no 250, still has the message.

Time is bounded by deadlines, not an idle timer a byte every few minutes would restart (RFC
5321 4.5.3.2.7 gives the server 5 minutes): after each reply the client has ``timeout``
seconds to complete its next command; while content is being read, each 64 KiB of it gives
another ``timeout`` (so content must come at 64 KiB per 5 minutes, about 220 octets a
second). Past the deadline: ``421 4.4.2`` and the session ends. Replies are written within
``timeout`` too, when standard output has a descriptor: a client that stops reading them
(its pipe full) is left. Either way an unfinished message is dropped, as at the end of input.
"""

from __future__ import annotations

import contextlib
import os
import select
import tempfile
import time
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
    ServerState,
    SessionClosed,
)

__all__ = ["READ_SIZE", "Submission", "serve"]

READ_SIZE = 65536  # one partial read at most; the session bounds what it keeps of it
#: Seconds for each command, and for each 64 KiB of content, as Postfix's smtpd_timeout (300s).
IDLE_TIMEOUT = 300.0
#: Content octets that earn another ``timeout`` seconds.
CONTENT_STEP = 65536
_CONTENT = frozenset({ServerState.DATA, ServerState.CHUNK})
_MAX_REASON = 200  # a reply line stays well under RFC 5321 4.5.3.1.5's 512 octets
# Statuses that mean the message itself will never do: a permanent refusal.
_PERMANENT = {Exit.DATAERR: "5.6.0", Exit.USAGE: "5.5.4", Exit.NOPERM: "5.7.1"}


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
    A client that takes over ``timeout`` seconds for a command (or for 64 KiB of content)
    is told so (421) and left; so is one that does not read its replies for as long."""
    server = ServerConnection(ServerConfig(host, max_message_size=max_size))
    session = _Session(server, _writer(stdout, timeout), submit)
    read = _reader(stdin)
    session.flush()
    deadline = time.monotonic() + timeout
    content = 0  # content octets read since the deadline was last set
    while not server.closed and not session.gone:
        try:
            data = read(READ_SIZE, deadline - time.monotonic())
        except _Idle:
            session.write(f"421 4.4.2 {host} Error: timeout exceeded\r\n".encode())
            break  # an unfinished message is dropped, as at the end of input
        except OSError:
            data = b""  # input unreadable: as if the client had gone
        if server.state in _CONTENT:
            content += len(data)
        server.receive_data(data)
        session.handle_events()
        session.flush()
        if session.replied or content >= CONTENT_STEP:
            session.replied, content = False, 0
            deadline = time.monotonic() + timeout
    session.drop_spool()
    return int(Exit.OK)


class _Idle(Exception):
    """The deadline passed with no input to read."""


def _reader(stdin: BinaryIO) -> Callable[[int, float], bytes]:
    """Partial reads, ``read(size, seconds)``: ``os.read`` on the descriptor, waiting at most
    ``seconds`` for input (:class:`_Idle` then, and at once when they are up); without one,
    ``read1`` on a buffered stream, else ``read``, with no time limit."""
    try:
        descriptor = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        read1 = getattr(stdin, "read1", None)
        if callable(read1):
            return lambda size, seconds: bytes(read1(size))
        return lambda size, seconds: stdin.read(size)

    def read(size: int, seconds: float) -> bytes:
        if seconds <= 0:  # a steady trickle must not outlast the deadline
            raise _Idle
        ready, _, _ = select.select([descriptor], [], [], seconds)
        if not ready:
            raise _Idle
        return os.read(descriptor, size)

    return read


def _writer(stdout: BinaryIO, timeout: float) -> Callable[[bytes], None]:
    """``write(data)``, all of it or OSError. On a descriptor, in pieces of PIPE_BUF octets
    each once select() finds room (so no write(2) blocks: POSIX, write), within ``timeout``
    seconds in all (TimeoutError then); else the stream's own write and flush."""
    try:
        descriptor = stdout.fileno()
    except (AttributeError, OSError, ValueError):

        def write_stream(data: bytes) -> None:
            stdout.write(data)
            stdout.flush()

        return write_stream
    with contextlib.suppress(OSError):  # if it fails, so will the writes, which tell
        stdout.flush()  # what was buffered goes first; from now on the descriptor is written

    def write(data: bytes) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            seconds = deadline - time.monotonic()
            if seconds <= 0 or not select.select([], [descriptor], [], seconds)[1]:
                raise TimeoutError("the client reads no replies")
            view = view[os.write(descriptor, view[: select.PIPE_BUF]) :]

    return write


class _Session:
    """The events of one session, acted on: spool, submit, reply."""

    def __init__(
        self,
        server: ServerConnection,
        write: Callable[[bytes], None],
        submit: Callable[[Submission], str],
    ) -> None:
        self.server = server
        self._write_out = write
        self.submit = submit
        self.spool: BinaryIO | None = None
        self.spool_error: str | None = None
        self.gone = False  # standard output is closed, or unread: nobody to answer
        self.replied = False  # a reply was written (serve() clears it)

    def flush(self) -> None:
        self.write(self.server.data_to_send())

    def write(self, out: bytes) -> None:
        if not out or self.gone:
            return
        try:
            self._write_out(out)
        except OSError:  # BrokenPipeError, TimeoutError: what is queued stays queued
            self.gone = True
        else:
            self.replied = True

    def handle_events(self) -> None:
        while (event := self.server.next_event()) is not None:
            if isinstance(event, MessageStarted):
                self.drop_spool()
                self.spool_error = None
                try:
                    self.spool = tempfile.TemporaryFile()  # noqa: SIM115 - see drop_spool
                except OSError as exc:  # no room for even an empty file: refused at the end
                    self.spool_error = _strerror(exc)
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
            self.spool_error = _strerror(exc)

    def _received(self, event: MessageReceived) -> None:
        spool, error = self.spool, self.spool_error
        self.spool = None
        try:
            if spool is not None and error is None:
                try:  # buffered: a small message meets a full disk only here
                    spool.flush()
                    spool.seek(0)
                except OSError as exc:
                    error = _strerror(exc)
            if spool is None or error is not None:
                self.server.refuse_message(451, "4.3.0", _one_line(f"cannot spool: {error}"))
                return
            self.flush()  # replies before the end of data need not wait for the queue
            if self.gone:  # no one would hear the 250: the client keeps the message
                self.server.refuse_message(451, "4.3.0", "Error: client gone")
                return
            envelope = event.envelope
            options = envelope.options
            submission = Submission(
                sender=None if envelope.sender is None else str(envelope.sender),
                recipients=tuple(str(r.address) for r in envelope.recipients),
                eight_bit=options.body is Body.EIGHT_BIT_MIME,
                smtputf8=options.smtputf8,
                content=spool,
            )
            self._submit(submission)
        finally:
            _close(spool)

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
        spool, self.spool = self.spool, None
        _close(spool)


def _close(spool: BinaryIO | None) -> None:
    """Close a spool, best effort: what it held is already submitted, or refused."""
    if spool is not None:
        with contextlib.suppress(OSError):
            spool.close()


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _one_line(text: str) -> str:
    """``text`` as a reply's text: one line of printable ASCII, not too long."""
    words = " ".join(text.split())
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in words)
    if len(cleaned) > _MAX_REASON:
        cleaned = cleaned[: _MAX_REASON - 3] + "..."
    return cleaned or "Error"
