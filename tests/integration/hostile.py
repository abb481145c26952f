"""A scripted, possibly hostile, SMTP server on 127.0.0.1 for security tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from mxsend._testca import Issued
from mxsend._world import _ServerTLS

# A responder gets the command line and the protocol; it writes what it likes.
Responder = Callable[[bytes, "HostileProtocol"], None]

EHLO = b"250-evil.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


def ordinary(line: bytes, proto: HostileProtocol) -> None:
    """A plain, well-behaved server; the default for commands a script does not cover."""
    verb = line.split(b" ", 1)[0].upper()
    if proto.in_data:
        if line == b".":
            proto.in_data = False
            proto.server.messages += 1
            proto.write(b"250 2.0.0 queued\r\n")
        return
    replies = {
        b"EHLO": EHLO,
        b"HELO": b"250 evil.test\r\n",
        b"MAIL": b"250 2.1.0 ok\r\n",
        b"RCPT": b"250 2.1.5 ok\r\n",
        b"RSET": b"250 ok\r\n",
        b"NOOP": b"250 ok\r\n",
        b"QUIT": b"221 bye\r\n",
    }
    if verb == b"DATA":
        proto.in_data = True
        proto.write(b"354 go\r\n")
    else:
        proto.write(replies.get(verb, b"502 5.5.2 no\r\n"))
    if verb == b"QUIT":
        proto.transport.loseConnection()  # type: ignore[union-attr]


@dataclass
class HostileServer:
    respond: Responder = ordinary
    greeting: bytes | None = b"220 evil.test ESMTP\r\n"
    certificate: Issued | None = None
    received: list[bytes] = field(default_factory=list)  # every line, in order
    messages: int = 0
    port: int = 0
    live: list[HostileProtocol] = field(default_factory=list)  # open connections
    _listening: Any = None

    def start(
        self, *, implicit_tls: bool = False, interface: str = "127.0.0.1", port: int = 0
    ) -> None:
        factory: Any = _Factory(self)
        if implicit_tls:
            assert self.certificate is not None
            factory = TLSMemoryBIOFactory(_ServerTLS(self.certificate), False, factory)
        self._listening = reactor.listenTCP(port, factory, interface=interface)  # type: ignore[attr-defined]
        self.port = self._listening.getHost().port

    def stop(self) -> Any:
        return self._listening.stopListening()


def serving(case: Any, server: HostileServer, *, implicit_tls: bool = False) -> HostileServer:
    """Start ``server`` for a trial test ``case``; it stops when the test ends."""
    server.start(implicit_tls=implicit_tls)
    case.addCleanup(server.stop)
    return server


class HostileProtocol(Protocol):
    def __init__(self, server: HostileServer) -> None:
        self.server = server
        self.buffer = b""
        self.in_data = False
        self.tls = False  # STARTTLS done: what follows is encrypted

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def start_tls(self) -> None:
        assert self.server.certificate is not None and self.transport is not None
        self.transport.startTLS(_ServerTLS(self.server.certificate))  # type: ignore[attr-defined]
        self.tls = True

    def connectionMade(self) -> None:
        self.server.live.append(self)
        if self.server.greeting is not None:
            self.write(self.server.greeting)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.server.live:
            self.server.live.remove(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            self.server.received.append(line)
            self.server.respond(line, self)


class _Factory(Factory):
    def __init__(self, server: HostileServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> HostileProtocol:
        return HostileProtocol(self.server)
