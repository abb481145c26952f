"""What the deliveries of one process share about configured routes: the sessions open per
destination (a route's ``concurrency``), its rate bucket, and the AUTH secrets read from
files or printed by commands.

A ``password_command`` runs with no shell, its standard input closed, in a session of its
own, with only ``PATH``, ``HOME`` and ``LANG`` of the environment; its output, less one
final line end, is the password, or the token for XOAUTH2 and OAUTHBEARER. The secret is
kept until a server refuses it; then the command is run again, once, for a fresh one (an
expired token). A command that fails, hangs or prints nothing defers the mail it was for;
past its deadline it is killed with all it started. What it writes on stderr is never shown
(it may hold a secret: a refresh token in an error message).

A ``password_file`` must be a regular file that no other user can read or write, nor its
group write (:func:`~mxsend.routing._table.secret_file_problem`); its first line is the
secret.

The per-destination state (session slots, rate buckets) is dropped once idle, so that a
process sending to many domains keeps only the busy ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredLock, DeferredSemaphore, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from mxsend.protocol import (
    AuthenticationError,
    CramMD5,
    Login,
    Mechanism,
    MxsendError,
    Plain,
    ScramSHA256,
    XOAuth2,
)
from mxsend.routing._table import Auth, Rate, secret_file_problem

__all__ = ["COMMAND_SECONDS", "CredentialsError", "OAuthBearer", "RouteState", "mechanism_for"]

#: A password command still running after this long is killed: deliveries wait on it.
COMMAND_SECONDS = 30.0
#: More output than this is no password or token (OAuth2 tokens run to a few KiB).
MAX_SECRET = 64 * 1024
#: All a password command gets of the environment (never MXSEND_PASSWORD, say).
COMMAND_ENVIRONMENT = ("PATH", "HOME", "LANG")
# spawnProcess cannot start a child in a session of its own: this does, then runs the
# command, so that a deadline can kill the whole process group.
_SETSID = "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[2:])"
#: Idle per-destination entries are swept once a map holds this many.
PRUNE_AT = 1024
#: Sessions a destination gets at first, and at most, across a process's deliveries when no
#: route sets its concurrency: Postfix's initial_destination_concurrency (5) and
#: default_destination_concurrency_limit (20).
INITIAL_CONCURRENCY = 5
MAX_CONCURRENCY = 20

_T = TypeVar("_T")


class CredentialsError(MxsendError):
    """An AUTH secret could not be had: the file cannot be read, the command failed."""


class OAuthBearer:
    """OAUTHBEARER (RFC 7628): a bearer token sent with AUTH. A refusal comes as a 334 with
    a JSON error, answered with a lone ^A (3.2.3), then the final 5xx.

    Pure, like the core's mechanisms (it belongs beside them in ``mxsend.protocol``)."""

    name = "OAUTHBEARER"

    def __init__(self, username: str, token: str) -> None:
        user = username.replace("=", "=3D").replace(",", "=2C")  # RFC 5801 gs2 saslname
        self._message = f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()
        self._error_seen = False

    def initial_response(self) -> bytes | None:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        if self._error_seen:
            raise AuthenticationError("unexpected OAUTHBEARER challenge from the server")
        self._error_seen = True
        return b"\x01"

    def succeeded(self) -> None:
        return None


def mechanism_for(auth: Auth, secret: str) -> Mechanism:
    """A fresh mechanism (they keep state within one AUTH exchange) named by ``auth``."""
    name = auth.mechanism.upper()
    if name == "LOGIN":
        return Login(auth.username, secret)
    if name == "CRAM-MD5":
        return CramMD5(auth.username, secret)
    if name == "SCRAM-SHA-256":
        return ScramSHA256(auth.username, secret)
    if name == "XOAUTH2":
        return XOAuth2(auth.username, secret)
    if name == "OAUTHBEARER":
        return OAuthBearer(auth.username, secret)
    return Plain(auth.username, secret)


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = 0  # bytes on stderr: counted, never kept
        self.overflow = False
        self.exited = False
        self.reason: BaseException | None = None
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data[: MAX_SECRET + 1 - len(self.out)]
        self.overflow = self.overflow or len(self.out) > MAX_SECRET

    def errReceived(self, data: bytes) -> None:
        self.err += len(data)

    def processExited(self, reason: Failure) -> None:
        self.exited = True

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason.value
        self.finish()

    def finish(self) -> None:
        if not self.ended.called:  # processEnded may still come after a deadline
            self.ended.callback(None)


def _spawn(reactor: Any, output: _Output, program: str, argv: tuple[str, ...]) -> Any:
    env = {name: os.environ[name] for name in COMMAND_ENVIRONMENT if name in os.environ}
    env.setdefault("PATH", os.defpath)
    if not sys.executable:  # embedded: no interpreter to start the session with
        return IReactorProcess(reactor).spawnProcess(
            output, program, list(argv), env=env, usePTY=False
        )
    wrapper = [sys.executable, "-I", "-S", "-c", _SETSID, program, *argv]
    return IReactorProcess(reactor).spawnProcess(
        output, sys.executable, wrapper, env=env, usePTY=False
    )


async def run_command(reactor: Any, argv: tuple[str, ...], seconds: float = COMMAND_SECONDS) -> str:
    """The output of ``argv`` less one final line end; CredentialsError when it cannot be
    run, exits other than 0, runs past ``seconds``, or prints nothing usable. Past the
    deadline its process group is killed and its pipes closed: the error comes at once,
    even when something it started still holds them."""
    program = shutil.which(argv[0])
    what = f"password_command {argv[0]}"
    if program is None:
        raise CredentialsError(f"{what}: no such program")
    output = _Output()
    process = _spawn(reactor, output, os.path.abspath(program), argv)
    group = process.pid  # the session's leader: its pid is the group's id
    timed_out = False

    def kill() -> None:
        nonlocal timed_out
        timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(ProcessExitedAlready, OSError):  # it ended as the timer fired
            process.signalProcess("KILL")
        process.loseConnection()  # our ends of its pipes: no waiting for their EOF
        output.finish()

    killer = IReactorTime(reactor).callLater(seconds, kill)
    await output.ended
    if timed_out:
        if output.exited:
            raise CredentialsError(
                f"{what}: exited, but what it started still held its output after "
                f"{seconds:g}s; killed"
            )
        raise CredentialsError(f"{what}: still running after {seconds:g}s, killed")
    killer.cancel()
    reason = output.reason
    if not isinstance(reason, ProcessDone):
        status = getattr(reason, "exitCode", None)
        why = f"exited with status {status}" if status is not None else "was killed"
        # Its stderr may hold a secret (a refresh token): only its size is told.
        hidden = f" (its {output.err} bytes of error output are not shown)" if output.err else ""
        raise CredentialsError(f"{what}: {why}{hidden}")
    if output.overflow:
        raise CredentialsError(f"{what}: printed more than {MAX_SECRET} bytes")
    return _secret(bytes(output.out), what)


def _secret(raw: bytes, what: str) -> str:
    text = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        secret = text.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"{what}: printed something that is not UTF-8") from None
    if not secret:
        raise CredentialsError(f"{what}: printed nothing")
    if any(c in secret for c in "\r\n\0"):
        raise CredentialsError(f"{what}: printed more than one line")
    return secret


def _read_file(path: str) -> str:
    """The first line of a password file that passes :func:`secret_file_problem`."""
    what = f"password_file {path}"
    try:
        # O_NONBLOCK: a FIFO put in its place is refused below instead of hanging.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialsError(f"cannot read {what}: {exc.strerror}") from None
    try:
        problem = secret_file_problem(os.fstat(fd).st_mode)
        if problem is not None:
            raise CredentialsError(f"{what} {problem}")
        data = b""
        while b"\n" not in data and len(data) <= MAX_SECRET + 1:
            more = os.read(fd, MAX_SECRET + 2 - len(data))
            if not more:
                break
            data += more
    except OSError as exc:
        raise CredentialsError(f"cannot read {what}: {exc.strerror}") from None
    finally:
        os.close(fd)
    first = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if len(first) > MAX_SECRET:
        raise CredentialsError(f"{what}: its first line is longer than {MAX_SECRET} bytes")
    return _secret(first, what)


def _pruned(table: dict[str, _T], idle: Callable[[_T], bool], bound: int) -> int:
    """Drop ``table``'s idle entries once it holds ``bound``; the next bound (twice what
    is left, so that busy entries are not swept over and over)."""
    if len(table) < bound:
        return bound
    for key in [key for key, value in table.items() if idle(value)]:
        del table[key]
    return max(PRUNE_AT, 2 * len(table))


def _idle_slots(semaphore: DeferredSemaphore) -> bool:
    return semaphore.tokens == semaphore.limit and not semaphore.waiting


class Window:
    """The sessions one destination may have open at once, learned from how it answers, as
    Postfix's scheduler does: each message delivered raises the limit by 1/limit (about one
    more session per round of sessions), each session that could not connect or was cut
    off lowers it by one, between 1 and ``most``."""

    def __init__(self, initial: int = INITIAL_CONCURRENCY, most: int = MAX_CONCURRENCY) -> None:
        self.limit = float(initial)
        self.most = most
        self.active = 0
        self._waiting: deque[Deferred[None]] = deque()

    def acquire(self) -> Deferred[None]:
        if self.active < int(self.limit):
            self.active += 1
            return succeed(None)
        waiter: Deferred[None] = Deferred(canceller=self._waiting.remove)
        self._waiting.append(waiter)
        return waiter

    def release(self, *, delivered: int, failed: bool) -> None:
        """One session ended: it delivered ``delivered`` messages, and ``failed`` when the
        destination did not hold it up (no connection, a 421, a time-out, a lost link)."""
        self.active -= 1
        if failed:
            self.limit = max(1.0, self.limit - 1)
        for _ in range(delivered):
            self.limit = min(float(self.most), self.limit + 1 / self.limit)
        while self._waiting and self.active < int(self.limit):
            self.active += 1
            self._waiting.popleft().callback(None)

    def idle(self) -> bool:
        return not self.active and not self._waiting


class _Bucket:
    """Tokens for ``rate.count`` messages, refilled evenly over ``rate.seconds``."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = float(rate.count)
        self.at = now
        self.lock = DeferredLock()

    def full(self, now: float) -> bool:
        """Nobody waits and it has refilled: the same as a new one, so it may go."""
        rate = self.rate
        refilled = self.tokens + (now - self.at) * rate.count / rate.seconds
        return not self.lock.locked and not self.lock.waiting and refilled >= rate.count


class RouteState:
    """Shared by every Deliverer of a process (a daemon makes one per batch): limits hold
    across them. ``reactor`` runs password commands and keeps time."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._slots: dict[str, DeferredSemaphore] = {}
        self._windows: dict[str, Window] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._slots_bound = self._buckets_bound = self._windows_bound = PRUNE_AT
        self._secrets: dict[Auth, str] = {}
        self._fetching: dict[Auth, DeferredLock] = {}

    def slots(self, destination: str, size: int) -> DeferredSemaphore:
        """The sessions ``destination`` may have open at once, across deliveries. Acquire
        it at once: an idle one (no holder, no waiter) may be dropped by a later call."""
        semaphore = self._slots.get(destination)
        if semaphore is None or semaphore.limit != size:
            self._slots_bound = _pruned(self._slots, _idle_slots, self._slots_bound)
            semaphore = self._slots[destination] = DeferredSemaphore(size)
        return semaphore

    def window(self, destination: str) -> Window:
        """The learned concurrency of a destination no route limits (see :class:`Window`).
        Acquire it at once: an idle one may be dropped by a later call, and start over."""
        window = self._windows.get(destination)
        if window is None:
            self._windows_bound = _pruned(self._windows, Window.idle, self._windows_bound)
            window = self._windows[destination] = Window()
        return window

    async def take(self, destination: str, rate: Rate, count: int) -> None:
        """Wait until ``count`` (at most ``rate.count``) more messages may go to
        ``destination``; takers are served in turn."""
        clock = self._clock
        bucket = self._buckets.get(destination)
        if bucket is None:
            now = clock.seconds()
            self._buckets_bound = _pruned(self._buckets, lambda b: b.full(now), self._buckets_bound)
            bucket = self._buckets.setdefault(destination, _Bucket(rate, now))
        await bucket.lock.acquire()
        try:
            while True:
                now = clock.seconds()
                refill = (now - bucket.at) * rate.count / rate.seconds
                bucket.tokens = min(float(rate.count), bucket.tokens + refill)
                bucket.at = now
                if bucket.tokens >= count:
                    bucket.tokens -= count
                    return
                wait = (count - bucket.tokens) * rate.seconds / rate.count
                await deferLater(clock, wait, lambda: None)
        finally:
            bucket.lock.release()

    async def mechanism(self, auth: Auth) -> Mechanism:
        """A fresh mechanism for ``auth`` with its secret (fetched once, then kept)."""
        return mechanism_for(auth, await self._secret(auth))

    async def _secret(self, auth: Auth) -> str:
        if auth.password is not None:
            return auth.password
        lock = self._fetching.setdefault(auth, DeferredLock())
        await lock.acquire()  # sessions starting together run the command once
        try:
            if auth not in self._secrets:
                if auth.password_command is not None:
                    secret = await run_command(self._reactor, auth.password_command)
                elif auth.password_file is not None:
                    secret = _read_file(auth.password_file)
                else:
                    raise CredentialsError(f"no password for AUTH user {auth.username}")
                self._secrets[auth] = secret
            return self._secrets[auth]
        finally:
            lock.release()

    def renew(self, auth: Auth) -> bool:
        """The server refused ``auth``'s secret: forget it. True when asking again may
        give another (a command, such as one printing an OAuth2 access token)."""
        self._secrets.pop(auth, None)
        return auth.password_command is not None
