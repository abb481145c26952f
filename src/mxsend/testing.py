"""Fakes for testing code that uses mxsend, with no network.

:class:`FakeServer` is a sans-I/O SMTP server with scripted replies; :func:`converse` runs a
:class:`~mxsend.protocol.ClientConnection` against it in memory.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.names import dns, error

from mxsend.protocol import ClientConnection, Event, SessionDriver, TLSRequested
from mxsend.queue import MemoryStore

__all__ = [
    "DEFAULT_EXTENSIONS",
    "FakeResolver",
    "FakeServer",
    "MemoryStore",
    "ReceivedMessage",
    "converse",
]

DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "SIZE 10485760",
    "8BITMIME",
    "SMTPUTF8",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "AUTH PLAIN LOGIN",
)
_MAX_LINE = 4096


@dataclass
class ReceivedMessage:
    sender: str
    recipients: list[str]
    content: bytes
    mail_parameters: list[str] = field(default_factory=list)


class FakeServer:
    """A scripted SMTP server. ``replies`` maps a recipient address (lower case) to the reply
    line its RCPT gets, e.g. ``{"gone@example.org": "550 5.1.1 no such user"}``; others get
    250. Accepted messages are appended to :attr:`messages`. ``credentials`` is the
    (user, password) pair AUTH PLAIN accepts."""

    def __init__(
        self,
        *,
        hostname: str = "mx.test",
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        replies: Mapping[str, str] | None = None,
        data_reply: str = "250 2.0.0 queued",
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.hostname = hostname
        self.extensions = extensions
        self.replies = {k.lower(): v for k, v in (replies or {}).items()}
        self.data_reply = data_reply
        self.credentials = credentials
        self.messages: list[ReceivedMessage] = []
        self.closed = False
        self.tls_requested = False
        self._buffer = b""
        self._reset()
        self._in_data = False
        self._bdat_left = 0
        self._bdat_last = False

    def _reset(self) -> None:
        self._sender: str | None = None
        self._params: list[str] = []
        self._recipients: list[str] = []
        self._content: list[bytes] = []

    def greeting(self) -> bytes:
        return f"220 {self.hostname} ESMTP fake\r\n".encode()

    def receive(self, data: bytes) -> bytes:
        """Consume client bytes; return the replies to send back."""
        self._buffer += data
        out: list[str] = []
        while self._buffer and not self.closed:
            if self._bdat_left:
                take = self._buffer[: self._bdat_left]
                self._buffer = self._buffer[len(take) :]
                self._content.append(take)
                self._bdat_left -= len(take)
                if not self._bdat_left:
                    out.append(self._end_chunk())
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_LINE:
                    out.append("500 5.5.2 line too long")
                    self.closed = True
                break
            line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if self._in_data:
                reply = self._data_line(line)
                if reply:
                    out.append(reply)
            else:
                out.append(self._command(line.decode("utf-8", "replace")))
        return "".join(f"{r}\r\n" for r in out if r).encode()

    def _data_line(self, line: bytes) -> str:
        if line == b".":
            self._in_data = False
            return self._accept()
        self._content.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
        return ""

    def _end_chunk(self) -> str:
        if not self._bdat_last:
            return "250 2.0.0 chunk received"
        self._bdat_last = False
        return self._accept()

    def _accept(self) -> str:
        if not self._recipients:
            self._reset()
            return "554 5.5.1 no valid recipients"
        content = b"".join(self._content)
        assert self._sender is not None
        self.messages.append(
            ReceivedMessage(self._sender, list(self._recipients), content, self._params)
        )
        self._reset()
        return self.data_reply

    def _command(self, line: str) -> str:
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            lines = [self.hostname, *self.extensions]
            return "\r\n".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{text}" for i, text in enumerate(lines)
            )
        if verb == "HELO":
            return f"250 {self.hostname}"
        if verb == "MAIL":
            path, _, params = rest[5:].partition(" ")
            self._reset()
            self._sender = path.strip("<>")
            self._params = params.split()
            return "250 2.1.0 sender ok"
        if verb == "RCPT":
            if self._sender is None:
                return "503 5.5.1 need MAIL first"
            address = rest[3:].partition(" ")[0].strip("<>")
            reply = self.replies.get(address.lower(), "250 2.1.5 recipient ok")
            if reply.startswith("2"):
                self._recipients.append(address)
            return reply
        if verb == "DATA":
            if not self._recipients:
                return "554 5.5.1 no valid recipients"
            self._in_data = True
            return "354 end with <CRLF>.<CRLF>"
        if verb == "BDAT":
            words = rest.split()
            self._bdat_left = int(words[0])
            self._bdat_last = len(words) > 1 and words[1].upper() == "LAST"
            return "" if self._bdat_left else self._end_chunk()
        if verb == "STARTTLS":
            self.tls_requested = True
            return "220 2.0.0 ready to start TLS"
        if verb == "AUTH":
            return self._auth(rest)
        if verb in ("RSET", "NOOP"):
            if verb == "RSET":
                self._reset()
            return "250 2.0.0 ok"
        if verb == "QUIT":
            self.closed = True
            return "221 2.0.0 bye"
        return "502 5.5.2 command not recognised"

    def _auth(self, rest: str) -> str:
        mechanism, _, initial = rest.partition(" ")
        if mechanism.upper() != "PLAIN" or not initial or self.credentials is None:
            return "504 5.5.4 mechanism not supported here"
        try:
            _, user, password = base64.b64decode(initial).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return "501 5.5.2 bad response"
        if (user, password) == self.credentials:
            return "235 2.7.0 authenticated"
        return "535 5.7.8 authentication credentials invalid"


def converse(
    connection: ClientConnection,
    server: FakeServer,
    on_event: Callable[[Event], None],
    *,
    max_rounds: int = 10_000,
    driver: SessionDriver | None = None,
) -> list[Event]:
    """Run ``connection`` against ``server`` in memory until neither has anything to say.
    STARTTLS is simulated: the channel is taken as encrypted once the server says 220.
    Give the ``driver`` that ``on_event`` feeds when its messages have streamed content: it
    is then sent in one go, as there is no flow control in memory."""
    events: list[Event] = []
    incoming = server.greeting()
    for _ in range(max_rounds):
        connection.receive_data(incoming)
        while (event := connection.next_event()) is not None:
            events.append(event)
            if isinstance(event, TLSRequested):
                connection.tls_established()
            on_event(event)
            if driver is not None and driver.streaming is not None and not driver.send_stream():
                connection.connection_lost("message content not sent")
        outgoing = connection.data_to_send()
        if not outgoing:
            break
        incoming = server.receive(outgoing)
        if server.closed and not incoming:
            connection.receive_data(b"")
    return events


class FakeResolver:
    """A twisted.names resolver answering from dictionaries, for tests with no network.

    ``mx`` maps a name to (preference, exchange) pairs (exchange ``""`` for a null MX); ``a``
    and ``aaaa`` map names to address lists; ``cname`` maps a name to its target. Names in
    ``nxdomain`` do not exist; names in ``servfail`` fail; ``queries`` records every question.
    """

    def __init__(
        self,
        *,
        mx: Mapping[str, list[tuple[int, str]]] | None = None,
        a: Mapping[str, list[str]] | None = None,
        aaaa: Mapping[str, list[str]] | None = None,
        cname: Mapping[str, str] | None = None,
        nxdomain: frozenset[str] = frozenset(),
        servfail: frozenset[str] = frozenset(),
        ttl: int = 300,
    ) -> None:
        self.mx = dict(mx or {})
        self.a = dict(a or {})
        self.aaaa = dict(aaaa or {})
        self.cname = dict(cname or {})
        self.nxdomain = nxdomain
        self.servfail = servfail
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []

    def _answer(self, name: str, kind: int, table: Mapping[str, list[Any]], make: Any) -> Any:
        self.queries.append((name, dns.QUERY_TYPES[kind]))
        if name in self.servfail:
            return fail(error.DNSServerError(name))
        if name in self.nxdomain:
            return fail(error.DNSNameError(name))
        if name in self.cname:
            target = self.cname[name]
            record = dns.RRHeader(name, dns.CNAME, ttl=self.ttl, payload=dns.Record_CNAME(target))
            return succeed(([record], [], []))
        answers = [
            dns.RRHeader(name, kind, ttl=self.ttl, payload=make(value))
            for value in table.get(name, [])
        ]
        return succeed((answers, [], []))

    def lookupMailExchange(self, name: str, timeout: Any = None) -> Any:
        return self._answer(name, dns.MX, self.mx, lambda mx: dns.Record_MX(*mx))

    def lookupAddress(self, name: str, timeout: Any = None) -> Any:
        return self._answer(name, dns.A, self.a, dns.Record_A)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Any:
        return self._answer(name, dns.AAAA, self.aaaa, dns.Record_AAAA)
