"""The daemon's submission socket: local users who cannot write the queue hand it messages
here (the request is :mod:`mxsend.queue._intake`'s).

Each connection carries one request. Its header is bounded, its content is spooled to a
temporary file as it comes (bounded by the message size limit), and the peer's uid comes
from the socket (SO_PEERCRED), never from the request. A connection that stalls is closed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.internet import interfaces
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from mxsend.queue import QueueError, QueueStore
from mxsend.queue._intake import (
    MAGIC,
    MAX_REQUEST_HEADER,
    IntakeError,
    SenderPolicy,
    SubmitRequest,
    accept,
    parse_request,
)

__all__ = ["SubmissionFactory", "listen_for_submissions", "store_intake"]

#: A request that sends nothing for this long is dropped.
IDLE_TIMEOUT = 60.0
#: A whole request must be in within this, however it trickles.
REQUEST_DEADLINE = 600.0
#: Requests open at once, in all and per submitting user: what a local user can hold of the
#: daemon (memory: a header each; disk: a spooled message each) is bounded.
MAX_CONNECTIONS = 64
MAX_PER_USER = 8
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _peer_uid(transport: Any) -> int | None:
    try:
        handle = transport.getHandle()
        creds = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (AttributeError, OSError):
        return None
    return int(_PEERCRED.unpack(creds)[1])


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class _Submission(Protocol):
    def __init__(self, factory: SubmissionFactory) -> None:
        self._factory = factory
        self._header = bytearray()
        self._request: SubmitRequest | None = None
        self._spool: IO[bytes] | None = None
        self._left = 0
        self._done = False
        self._idle: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._searched = 0  #: how much of the header has been searched for its end
        self.uid: int | None = None

    def connectionMade(self) -> None:
        clock = self._factory.clock
        self._idle = clock.callLater(IDLE_TIMEOUT, self._stalled)
        self._deadline = clock.callLater(REQUEST_DEADLINE, self._stalled)
        self.uid = _peer_uid(self.transport)
        if self.uid is None:
            self._answer(554, "cannot tell who is submitting")
        elif not self._factory.admit(self):
            self._answer(451, "too many submissions at once; try again later")

    def _stalled(self) -> None:
        self._answer(451, "timed out waiting for the submission")

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(IDLE_TIMEOUT)
        if self._request is None:
            self._header += data
            end = self._header.find(b"\n\n", self._searched)
            self._searched = max(0, len(self._header) - 1)  # only new bytes, next time
            if end < 0:
                if len(self._header) > MAX_REQUEST_HEADER or not MAGIC.startswith(
                    bytes(self._header[: len(MAGIC)])
                ):
                    self._answer(554, "not an mxsend submission, or too long a one")
                return
            header, data = bytes(self._header[: end + 2]), bytes(self._header[end + 2 :])
            self._header.clear()
            try:
                self._request = parse_request(header)
            except IntakeError as exc:
                self._answer(exc.code, str(exc))
                return
            if self._request.size > self._factory.max_size:
                self._answer(554, f"message larger than {self._factory.max_size} octets")
                return
            self._left = self._request.size
            try:
                spool_dir = self._factory.spool_dir
                self._spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - _finish
            except OSError as exc:
                self._answer(451, f"cannot spool the message: {exc.strerror}")
                return
        self._content(data)

    def _content(self, data: bytes) -> None:
        assert self._spool is not None and self._request is not None
        if len(data) > self._left:
            self._answer(554, "more content than the submission's size says")
            return
        try:
            self._spool.write(data)
        except OSError as exc:
            self._answer(451, f"cannot spool the message: {exc.strerror}")
            return
        self._left -= len(data)
        if self._left == 0:
            self._spool.seek(0)
            self._accept(self._request, self._spool)

    def _accept(self, request: SubmitRequest, content: IO[bytes]) -> None:
        uid = self.uid
        assert uid is not None  # taken when the connection was made
        try:
            queue_id = self._factory.intake(request, content, uid)
        except IntakeError as exc:
            self._factory.log(f"submission from uid {uid} refused: {exc}")
            self._answer(exc.code, str(exc))
            return
        except QueueError as exc:
            self._answer(451, str(exc))
            return
        self._factory.log(f"{queue_id}: submitted by uid {uid} ({_user(uid)})")
        self._answer(250, queue_id)
        self._factory.queued(queue_id)

    def _answer(self, code: int, text: str) -> None:
        if self._done:
            return
        self._done = True
        line = " ".join(text.split())  # one line, whatever the reason says
        assert self.transport is not None
        self.transport.write(f"{code} {line}\n".encode())
        self.transport.loseConnection()
        self._finish()

    def _finish(self) -> None:
        for call in (self._idle, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._deadline = None
        self._factory.leave(self)
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._done = True
        self._finish()


class SubmissionFactory(Factory):
    """Takes one request per connection and hands it to ``intake``."""

    def __init__(
        self,
        intake: Callable[[SubmitRequest, IO[bytes], int], str],
        *,
        clock: IReactorTime,
        max_size: int,
        queued: Callable[[str], None] = lambda queue_id: None,
        log: Callable[[str], None] = lambda line: None,
        spool_dir: str | None = None,
    ) -> None:
        self.spool_dir = spool_dir  #: where requests are spooled (the queue's own disk)
        self.intake = intake
        self.clock = clock
        self.max_size = max_size
        self.queued = queued  #: called with each queue id once it is durable
        self.log = log

        self._open: dict[_Submission, int] = {}  #: requests being taken, by their uid
        self._per_user: dict[int, int] = {}

    def admit(self, request: _Submission) -> bool:
        """Whether one more request from ``request.uid`` may be taken now."""
        uid = request.uid
        assert uid is not None
        if len(self._open) >= MAX_CONNECTIONS or self._per_user.get(uid, 0) >= MAX_PER_USER:
            return False
        self._open[request] = uid
        self._per_user[uid] = self._per_user.get(uid, 0) + 1
        return True

    def leave(self, request: _Submission) -> None:
        uid = self._open.pop(request, None)
        if uid is not None:
            self._per_user[uid] -= 1
            if not self._per_user[uid]:
                del self._per_user[uid]

    def buildProtocol(self, addr: object) -> _Submission:
        return _Submission(self)


def store_intake(
    store: QueueStore, policy: SenderPolicy
) -> Callable[[SubmitRequest, IO[bytes], int], str]:
    """``intake`` for a :class:`SubmissionFactory` that queues into ``store``."""

    def intake(request: SubmitRequest, content: IO[bytes], uid: int) -> str:
        return accept(
            store, request, content, uid=uid, user=_user(uid), policy=policy, now=time.time()
        )

    return intake


def listen_for_submissions(
    reactor: interfaces.IReactorUNIX, path: str, factory: SubmissionFactory, *, mode: int = 0o666
) -> IListeningPort:
    """Listen at ``path`` (a stale socket there is replaced; anything else is an error).
    Any local user may connect (``mode``), as any user may run sendmail: who they are is
    taken from the socket, and the sender rules say what they may do."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket")
        os.unlink(path)
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    return reactor.listenUNIX(path, factory, mode=mode, wantPID=False)
