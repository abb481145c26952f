"""What the deliveries of one process share about configured routes: the sessions open per
destination (a route's ``concurrency``), its rate bucket, and the AUTH secrets read from
files or printed by commands.

A ``password_command`` runs with no shell, its standard input closed; its output, less one
final line end, is the password, or the token for XOAUTH2 and OAUTHBEARER. The secret is
kept until a server refuses it; then the command is run again, once, for a fresh one (an
expired token). A command that fails, hangs or prints nothing defers the mail it was for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, DeferredSemaphore
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
from mxsend.routing._table import Auth, Rate

__all__ = ["COMMAND_SECONDS", "CredentialsError", "OAuthBearer", "RouteState", "mechanism_for"]

#: A password command still running after this long is killed: deliveries wait on it.
COMMAND_SECONDS = 30.0
#: More output than this is no password or token (OAuth2 tokens run to a few KiB).
MAX_SECRET = 64 * 1024
_MAX_STDERR = 2048


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
        self.err = bytearray()
        self.overflow = False
        self.reason: BaseException | None = None
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data[: MAX_SECRET + 1 - len(self.out)]
        self.overflow = self.overflow or len(self.out) > MAX_SECRET

    def errReceived(self, data: bytes) -> None:
        self.err += data[: _MAX_STDERR - len(self.err)]

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason.value
        self.ended.callback(None)


async def run_command(reactor: Any, argv: tuple[str, ...], seconds: float = COMMAND_SECONDS) -> str:
    """The output of ``argv`` less one final line end; CredentialsError when it cannot be
    run, exits other than 0, runs past ``seconds``, or prints nothing usable."""
    program = shutil.which(argv[0])
    what = f"password_command {argv[0]}"
    if program is None:
        raise CredentialsError(f"{what}: no such program")
    output = _Output()
    process = IReactorProcess(reactor).spawnProcess(
        output, program, list(argv), env=dict(os.environ), usePTY=False
    )

    def kill() -> None:
        with contextlib.suppress(ProcessExitedAlready):  # it ended as the timer fired
            process.signalProcess("KILL")

    killer = IReactorTime(reactor).callLater(seconds, kill)
    await output.ended
    reason = output.reason
    if not killer.active():
        raise CredentialsError(f"{what}: still running after {seconds:g}s, killed")
    killer.cancel()
    if not isinstance(reason, ProcessDone):
        status = getattr(reason, "exitCode", None)
        detail = bytes(output.err).decode("utf-8", "replace").strip().splitlines()
        why = f"exited with status {status}" if status is not None else "was killed"
        raise CredentialsError(f"{what}: {why}" + (f": {detail[0][:200]}" if detail else ""))
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
    try:
        with open(path, "rb") as handle:
            first = handle.readline(MAX_SECRET + 1)
    except OSError as exc:
        raise CredentialsError(f"cannot read password_file {path}: {exc.strerror}") from None
    return _secret(first.removesuffix(b"\n"), f"password_file {path}")


class _Bucket:
    """Tokens for ``rate.count`` messages, refilled evenly over ``rate.seconds``."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.tokens = float(rate.count)
        self.at = now
        self.lock = DeferredLock()


class RouteState:
    """Shared by every Deliverer of a process (a daemon makes one per batch): limits hold
    across them. ``reactor`` runs password commands and keeps time."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._slots: dict[str, DeferredSemaphore] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._secrets: dict[Auth, str] = {}
        self._fetching: dict[Auth, DeferredLock] = {}

    def slots(self, destination: str, size: int) -> DeferredSemaphore:
        """The sessions ``destination`` may have open at once, across deliveries."""
        semaphore = self._slots.get(destination)
        if semaphore is None or semaphore.limit != size:
            semaphore = self._slots[destination] = DeferredSemaphore(size)
        return semaphore

    async def take(self, destination: str, rate: Rate, count: int) -> None:
        """Wait until ``count`` (at most ``rate.count``) more messages may go to
        ``destination``; takers are served in turn."""
        clock = self._clock
        bucket = self._buckets.setdefault(destination, _Bucket(rate, clock.seconds()))
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
