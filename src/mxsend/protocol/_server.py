"""The sans-I/O SMTP server side, for local submission (``sendmail -bs``): bytes in, events
out, replies to send.

Feed what the client sends to :meth:`ServerConnection.receive_data` (``b""`` at the end of
input), read events from :meth:`~ServerConnection.next_event`, write
:meth:`~ServerConnection.data_to_send` to the client. Content arrives in
:class:`MessageData` chunks as it is received, never held whole; at its end
:class:`MessageReceived` pauses the session until the caller answers with
:meth:`~ServerConnection.accept_message` (once the message is durable) or
:meth:`~ServerConnection.refuse_message`. Pipelined commands (RFC 2920) are taken in order
and their replies batched in one :meth:`~ServerConnection.data_to_send`.

Supported: RFC 5321 (commands 4.1, transparency 4.5.2, limits 4.5.3.1), RFC 1870 SIZE,
RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 2920 PIPELINING, RFC 3030 CHUNKING, RFC 2034 and
RFC 3463 enhanced status codes. STARTTLS and AUTH are not offered: the peer is local.

Strict, as Postfix's ``smtpd_forbid_bare_newline = reject`` (CVE-2023-51764): a bare LF or
bare CR in a command gets ``550 5.5.2 HOST Error: bare <LF> received`` (or ``<CR>``) and the
session ends; in content the message is refused with that reply once the real end of data,
CRLF ``.`` CRLF, arrives, so no ``<LF>.<LF>`` variant ever ends the data or starts a
command. Every buffer is bounded: a command line by :data:`MAX_COMMAND_LINE`, a partial
text line by :data:`MAX_TEXT_LINE`; errors and idle commands by :class:`ServerConfig`.

Sessions, as states (commands not listed for a state get the reply in
:data:`OUT_OF_SEQUENCE`, or are taken without a change of state)::

    GREETED --HELO/EHLO--> READY --MAIL--> MAIL --RCPT--> MAIL
    MAIL --DATA (354)--> DATA --CRLF.CRLF--> VERDICT --accept/refuse--> READY
    MAIL | CHUNKING --BDAT n--> CHUNK --n octets--> CHUNKING    (--BDAT n LAST--> VERDICT)
    READY | MAIL | CHUNKING --RSET, HELO/EHLO--> READY
    any --QUIT, too many errors, bare CR/LF, malformed BDAT, end of input--> CLOSED
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mxsend.protocol._address import Address, validate_domain
from mxsend.protocol._encoder import _long_line_in
from mxsend.protocol._errors import AddressError, LocalProtocolError, ParameterError
from mxsend.protocol._options import Body, Envelope, MailOptions, Recipient
from mxsend.protocol._reply import EnhancedStatus, Reply

__all__ = [
    "MAX_COMMAND_LINE",
    "MAX_PAUSED_INPUT",
    "MAX_TEXT_LINE",
    "OUT_OF_SEQUENCE",
    "MessageAborted",
    "MessageData",
    "MessageReceived",
    "MessageStarted",
    "ServerConfig",
    "ServerConnection",
    "ServerEvent",
    "ServerState",
    "SessionClosed",
]

# RFC 5321 4.5.3.1.4: 512 octets with CRLF, and each extension may add to MAIL and RCPT (RFC
# 1869 4.1.2; SIZE adds 26). 2048, Postfix's line_length_limit and the client's own bound.
MAX_COMMAND_LINE = 2048
# RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF (998 before it, RFC
# 5322 2.1.1). Checked after un-stuffing; on the wire a line may carry one transparency dot.
MAX_TEXT_LINE = 1000
# RFC 5321 4.5.3.1.8: at least 100 recipients must be taken; Postfix's smtpd_recipient_limit.
DEFAULT_MAX_RECIPIENTS = 1000
# Postfix's smtpd_recipient_overshoot_limit: a 452 for a recipient past the limit is not the
# client's error (RFC 5321 4.5.3.1.10: it sends the rest later), until this many more.
DEFAULT_RECIPIENT_OVERSHOOT = 1000
# Postfix's smtpd_hard_error_limit and smtpd_junk_command_limit.
DEFAULT_MAX_ERRORS = 20
DEFAULT_MAX_JUNK = 100
DEFAULT_MAX_MESSAGE_SIZE = 50 * 1024 * 1024
# While a verdict is awaited nothing is parsed; a caller that keeps reading meanwhile may
# buffer this much (a pipelined BDAT chunk of the next message, say) and no more.
MAX_PAUSED_INPUT = 1024 * 1024

_END = b"\r\n.\r\n"  # RFC 5321 4.1.1.4: the only end of data
_NOT_IMPLEMENTED = frozenset({"STARTTLS", "AUTH", "EXPN", "ETRN", "TURN", "ATRN", "VERB"})


class ServerState(enum.Enum):
    # Members are singletons: identity hashing is C-fast, Enum's own hashes the name.
    __hash__ = object.__hash__

    GREETED = "greeted"  #: 220 sent; HELO or EHLO expected
    READY = "ready"  #: no transaction
    MAIL = "mail"  #: MAIL taken; RCPT, DATA or BDAT expected
    DATA = "data"  #: reading content after 354, up to CRLF.CRLF
    CHUNK = "chunk"  #: reading the octets of a BDAT chunk
    CHUNKING = "chunking"  #: between the BDAT chunks of a message
    VERDICT = "verdict"  #: content complete; the caller accepts or refuses it
    CLOSED = "closed"  #: the session is over


class _Verb(enum.Enum):
    HELO = "HELO"
    EHLO = "EHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"


_VERBS = {verb.value: verb for verb in _Verb}
_S, _V = ServerState, _Verb
_FIRST = (503, "5.5.1", "Error: send HELO/EHLO first")
_NEED_MAIL = (503, "5.5.1", "Error: need MAIL command")

#: Commands out of sequence (RFC 5321 4.1.4, 3.3; RFC 3030 2: no MAIL, RCPT or DATA amid BDAT
#: chunks): (state, verb) -> (code, enhanced, text), as Postfix words them.
OUT_OF_SEQUENCE: Mapping[tuple[ServerState, _Verb], tuple[int, str, str]] = MappingProxyType(
    {
        (_S.GREETED, _V.MAIL): _FIRST,
        (_S.GREETED, _V.RCPT): _FIRST,
        (_S.GREETED, _V.DATA): _FIRST,
        (_S.GREETED, _V.BDAT): _FIRST,
        (_S.READY, _V.RCPT): _NEED_MAIL,
        (_S.READY, _V.DATA): _NEED_MAIL,
        (_S.READY, _V.BDAT): _NEED_MAIL,
        (_S.MAIL, _V.MAIL): (503, "5.5.1", "Error: nested MAIL command"),
        (_S.CHUNKING, _V.MAIL): (503, "5.5.1", "Error: MAIL after BDAT"),
        (_S.CHUNKING, _V.RCPT): (503, "5.5.1", "Error: RCPT after BDAT"),
        (_S.CHUNKING, _V.DATA): (503, "5.5.1", "Error: DATA after BDAT"),
    }
)
del _S, _V

# Commands that do no work (and BDAT 0): past the junk limit each is also an error (Postfix).
_JUNK = frozenset({_Verb.HELO, _Verb.EHLO, _Verb.RSET, _Verb.NOOP, _Verb.VRFY, _Verb.HELP})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a server session behaves. ``host`` (a domain) names it in the greeting and EHLO,
    and qualifies ``RCPT TO:<postmaster>`` (RFC 5321 4.5.1)."""

    host: str
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  #: advertised as SIZE; 552 5.3.4 past it
    max_recipients: int = DEFAULT_MAX_RECIPIENTS  #: then 452 4.5.3 per RCPT
    max_errors: int = DEFAULT_MAX_ERRORS  #: then 421 4.7.0 and the session ends
    max_junk_commands: int = DEFAULT_MAX_JUNK  #: NOOP, RSET... each one more counts as an error
    #: 452s past max_recipients in one transaction that are not errors; each further one is
    recipient_overshoot: int = DEFAULT_RECIPIENT_OVERSHOOT

    def __post_init__(self) -> None:
        validate_domain(self.host)
        if self.max_message_size < 1:
            raise ParameterError("max_message_size must be positive")
        if self.max_recipients < 100:
            raise ParameterError("RFC 5321 4.5.3.1.8: max_recipients must be at least 100")
        if self.max_errors < 1 or self.max_junk_commands < 0 or self.recipient_overshoot < 0:
            raise ParameterError(
                "max_errors must be positive, max_junk_commands and recipient_overshoot not "
                "negative"
            )


@dataclass(frozen=True, slots=True)
class MessageStarted:
    """Content begins (354 sent, or the first BDAT chunk taken) for ``envelope``."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class MessageData:
    """Content as received: dot-unstuffed, CRLF line ends. Concatenated, the chunks of a
    message are exactly its content (ending with CRLF unless it is empty)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """The content is complete. Make it durable, then call ``accept_message(queue_id)``, or
    ``refuse_message(...)``; nothing more is read until then."""

    envelope: Envelope
    size: int  #: octets of content, as in the MessageData chunks
    chunked: bool  #: sent with BDAT (RFC 3030) rather than DATA


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """The content begun is being discarded (refused, reset, or the client left): drop
    whatever was kept of it. No MessageReceived follows for it."""

    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over: close the connection after writing ``data_to_send()``."""

    reason: str


ServerEvent = MessageStarted | MessageData | MessageReceived | MessageAborted | SessionClosed


def _reply(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code, (f"{enhanced} {text}",), EnhancedStatus.parse(enhanced))


class _Lines:
    """Checks CRLF text arriving in pieces of any size: bare CR, bare LF and lines over 998
    octets, with state carried from piece to piece."""

    __slots__ = ("cr", "length")

    def __init__(self) -> None:
        self.cr = False  # the last piece ended with a CR whose LF is still to come
        self.length = 0  # octets of the unfinished line

    def check(self, piece: bytes) -> str | None:
        """What is wrong with ``piece`` ("LF", "CR" or "long"), or None."""
        text = b"\r" + piece if self.cr else piece
        self.cr = text[-1:] == b"\r"
        if self.cr:
            text = text[:-1]
        crlf = text.count(b"\r\n")
        if text.count(b"\n") != crlf:
            return "LF"
        if text.count(b"\r") != crlf:
            return "CR"
        if _long_line_in(text, self.length):
            return "long"
        last = text.rfind(b"\n")
        self.length = len(text) - last - 1 if last >= 0 else self.length + len(text)
        return None


class _Transaction:
    __slots__ = (
        "built",
        "chunked",
        "failed",
        "lines",
        "options",
        "overshoot",
        "recipients",
        "refusal",
        "sender",
        "size",
        "started",
    )

    def __init__(self, sender: Address | None, options: MailOptions) -> None:
        self.sender = sender
        self.options = options
        self.recipients: list[Recipient] = []
        self.overshoot = 0  # RCPTs refused past the recipient limit
        self.started = False  # MessageStarted was sent
        self.chunked = False
        self.size = 0  # content octets passed on (or that would have been)
        self.refusal: Reply | None = None  # content refused; the reply once it ends
        self.failed = False  # a BDAT chunk was refused: the rest are discarded (RFC 3030 4.2)
        self.lines = _Lines()
        self.built: Envelope | None = None

    def envelope(self) -> Envelope:
        """The envelope, built once content starts: no recipient joins after that."""
        if self.built is None:
            self.built = Envelope(self.sender, tuple(self.recipients), self.options)
        return self.built


class ServerConnection:
    """One SMTP server session, with no I/O of its own. The greeting is ready to send at
    once. Methods called out of turn raise :class:`LocalProtocolError` and change nothing;
    what the client sends never raises, it gets a reply."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._state = ServerState.GREETED
        self._buffer = b""
        self._pos = 0
        self._out: list[bytes] = []
        self._events: deque[ServerEvent] = deque()
        self._txn: _Transaction | None = None
        self._client_name: str | None = None
        self._errors = 0
        self._junk = 0
        self._chunk_left = 0  # octets of the current BDAT chunk still to read
        self._chunk_size = 0
        self._chunk_last = False
        self._resume = ServerState.READY  # the state to go back to after an orphan chunk
        self._orphan: _Transaction | None = None  # a refused BDAT with no transaction
        self._skipping = False  # inside an overlong command line, up to its LF
        self._skipped_cr = False  # ... whose last octet so far was CR
        self._discarding = False  # DATA content refused: only CRLF.CRLF is looked for
        self._tail = b""  # while discarding: the last octets, for a CRLF.CRLF split in two
        self._eof = False
        host = config.host
        self._bare = {
            kind: _reply(550, "5.5.2", f"{host} Error: bare <{kind}> received")
            for kind in ("LF", "CR")
        }
        self._send(Reply(220, (f"{host} ESMTP mxsend",)))

    # -- what the caller reads --------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is ServerState.CLOSED

    @property
    def paused(self) -> bool:
        """A verdict is awaited: stop reading until accept_message() or refuse_message()."""
        return self._state is ServerState.VERDICT

    @property
    def client_name(self) -> str | None:
        """The name the client gave in HELO or EHLO, unchecked (RFC 5321 4.1.4)."""
        return self._client_name

    def data_to_send(self) -> bytes:
        """The replies to write now (possibly none), batched."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> ServerEvent | None:
        """The next event, or None until more input (or a verdict) comes."""
        return self._events.popleft() if self._events else None

    # -- input and the caller's actions -----------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means the end of input. Ignored once closed."""
        if self._state is ServerState.CLOSED:
            return
        if self.paused and len(self._buffer) - self._pos + len(data) > MAX_PAUSED_INPUT:
            raise LocalProtocolError("input kept coming while a verdict was awaited")
        if not data:
            self._eof = True
        elif self._pos == len(self._buffer):
            self._buffer, self._pos = bytes(data), 0
        else:
            self._buffer, self._pos = self._buffer[self._pos :] + data, 0
        self._run()

    def accept_message(self, queue_id: str) -> None:
        """The message is safe (RFC 5321 6.1): ``250 2.0.0 Ok: queued as QUEUE_ID``."""
        if not (queue_id.isascii() and queue_id.isprintable()) or " " in queue_id or not queue_id:
            raise LocalProtocolError(f"queue id {queue_id!r} is not one printable word")
        txn = self._verdict()
        if txn.chunked:  # Postfix says how much was taken after BDAT
            self._send(_reply(250, "2.0.0", f"Ok: {txn.size} bytes queued as {queue_id}"))
        else:
            self._send(_reply(250, "2.0.0", f"Ok: queued as {queue_id}"))
        self._errors = self._junk = 0  # real work was done (Postfix resets both)
        self._run()

    def refuse_message(self, code: int, enhanced: str, text: str) -> None:
        """Refuse the message with a 4xx or 5xx reply, e.g. ``(451, "4.3.0", "disk full")``."""
        status = EnhancedStatus.parse(enhanced)
        if not 400 <= code < 600 or status is None or status.klass != code // 100:
            raise LocalProtocolError(f"{code} {enhanced} is not a matching 4xx/5xx refusal")
        if not text.isascii() or not text.isprintable():
            raise LocalProtocolError("the refusal text must be one line of printable ASCII")
        self._verdict()
        self._send(_reply(code, enhanced, text))
        self._run()

    def _verdict(self) -> _Transaction:
        txn = self._txn
        if self._state is not ServerState.VERDICT or txn is None:
            raise LocalProtocolError(f"no message awaits a verdict (state {self._state.name})")
        self._txn = None
        self._state = ServerState.READY
        return txn

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        """Take buffered input for as long as the state allows."""
        while True:
            state = self._state
            if self._errors >= self.config.max_errors and state is not ServerState.CLOSED:
                self._send(_reply(421, "4.7.0", f"{self.config.host} Error: too many errors"))
                self._close("too many errors")
            if self._state is ServerState.CLOSED or state is ServerState.VERDICT:
                return
            before = self._pos
            if state is ServerState.DATA:
                self._data()
            elif state is ServerState.CHUNK:
                self._chunk()
            else:
                self._line()
            if self._pos == before and self._state is state:
                if not self._eof:
                    return
                self._close("end of input")  # no input left, and none to come

    def _send(self, reply: Reply, *, error: bool = False) -> None:
        """Queue ``reply``; an ``error`` counts towards max_errors (checked by _run)."""
        last = len(reply.lines) - 1
        self._out.append(
            "".join(
                f"{reply.code}{' ' if i == last else '-'}{line}\r\n"
                for i, line in enumerate(reply.lines)
            ).encode("utf-8")
        )
        self._errors += error

    def _close(self, reason: str) -> None:
        self._abort(reason)
        self._txn = self._orphan = None
        self._state = ServerState.CLOSED
        self._buffer, self._pos = b"", 0
        self._events.append(SessionClosed(reason))

    def _abort(self, reason: str) -> None:
        """Drop the content begun, if any (RSET, EHLO, QUIT, refusal, end of input)."""
        txn = self._txn
        if txn is not None and txn.started and self._state is not ServerState.VERDICT:
            txn.started = False
            self._events.append(MessageAborted(reason))

    # -- commands ---------------------------------------------------------------------------

    def _line(self) -> None:
        """One command line, or the part of an overlong one there is."""
        buffer, pos = self._buffer, self._pos
        newline = buffer.find(b"\n", pos)
        if self._skipping:
            end = len(buffer) if newline < 0 else newline
            if end > pos:
                self._skipped_cr = buffer[end - 1] == 0x0D
            self._pos = end if newline < 0 else newline + 1
            if newline >= 0:
                self._skipping = False
                if not self._skipped_cr:
                    self._bare_newline("LF")
            return
        if newline < 0:
            partial = buffer[pos:]
            if b"\r" in partial[:-1]:  # a CR followed by anything but LF
                self._bare_newline("CR")
            elif len(partial) >= MAX_COMMAND_LINE:
                self._too_long(partial)
            return
        line = buffer[pos:newline]
        self._pos = newline + 1
        if len(line) + 1 > MAX_COMMAND_LINE:
            self._too_long(line + b"\n")
        elif line[-1:] != b"\r":
            self._bare_newline("LF")
        elif b"\r" in line[:-1]:
            self._bare_newline("CR")
        else:
            self._command(line[:-1])

    def _too_long(self, seen: bytes) -> None:
        if _is_bdat(seen):
            self._bad_bdat()
            return
        # RFC 5321 4.5.3.1.10: "500 Line too long"; the rest of the line is skipped unread.
        self._send(_reply(500, "5.5.2", "Error: line too long"), error=True)
        if seen[-1:] != b"\n":
            self._skipping = True
            self._skipped_cr = seen[-1:] == b"\r"
            self._pos = len(self._buffer)
        elif seen[-2:-1] != b"\r":
            self._bare_newline("LF")

    def _bare_newline(self, kind: str) -> None:
        # Postfix smtpd_forbid_bare_newline = reject: the reply, then hang up (smtpd.c).
        self._send(self._bare[kind])
        self._close(f"bare <{kind}> received")

    def _bad_bdat(self) -> None:
        # Without a size the chunk cannot be found: hang up (as Postfix does), or its octets
        # would run as commands.
        self._send(_BAD_BDAT)
        self._close("malformed BDAT")

    def _refuse_line(self, raw: bytes, reply: Reply) -> None:
        """A command line that fails a check; one that may be a BDAT ends the session."""
        if _is_bdat(raw):
            self._bad_bdat()
        else:
            self._send(reply, error=True)

    def _command(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse_line(raw, _reply(500, "5.5.2", "Error: bad UTF-8 syntax"))
            return
        if not text.isprintable():  # C0 controls, DEL, and what Address.parse would refuse
            self._refuse_line(raw, _reply(500, "5.5.2", "Error: bad syntax"))
            return
        word, _, argument = text.partition(" ")
        verb = _VERBS.get(word.upper())
        if verb is None:
            if word.upper() in _NOT_IMPLEMENTED:  # STARTTLS, AUTH: not for a local peer
                self._send(_reply(502, "5.5.1", "Error: command not implemented"), error=True)
            else:  # " BDAT 5", "BDAT,5": hung up on too
                self._refuse_line(raw, _reply(500, "5.5.2", "Error: command not recognized"))
            return
        if verb in _JUNK:
            self._idle()
        if verb is _Verb.BDAT:
            self._bdat(argument)  # its chunk is read even when it is refused
        elif (refusal := OUT_OF_SEQUENCE.get((self._state, verb))) is not None:
            self._send(_reply(*refusal), error=True)
        else:
            _HANDLERS[verb](self, argument)

    def _idle(self) -> None:
        """A command that does no work: past the junk limit each is an error (Postfix)."""
        self._junk += 1
        self._errors += self._junk > self.config.max_junk_commands

    def _helo(self, argument: str) -> None:
        self._hello(_Verb.HELO, argument)

    def _ehlo(self, argument: str) -> None:
        self._hello(_Verb.EHLO, argument)

    def _hello(self, verb: _Verb, argument: str) -> None:
        name = argument.strip(" ")
        if not name or " " in name:  # RFC 5321 4.1.1.1: one Domain or address-literal
            self._send(_reply(501, "5.5.4", f"Syntax: {verb.value} hostname"), error=True)
            return
        self._reset("new HELO/EHLO")  # RFC 5321 4.1.4: EHLO is also a RSET
        self._client_name = name
        host = self.config.host
        if verb is _Verb.HELO:
            self._send(Reply(250, (host,)))
            return
        lines = (
            host,
            "PIPELINING",
            f"SIZE {self.config.max_message_size}",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
        )
        self._send(Reply(250, lines))

    def _reset(self, reason: str) -> None:
        self._abort(reason)
        self._txn = None
        self._state = ServerState.READY

    def _rset(self, argument: str) -> None:
        if argument:
            self._send(_reply(501, "5.5.4", "Syntax: RSET"), error=True)
            return
        if self._state is ServerState.GREETED:
            self._send(_reply(250, "2.0.0", "Ok"))
            return
        self._reset("RSET")
        self._send(_reply(250, "2.0.0", "Ok"))

    def _noop(self, argument: str) -> None:
        self._send(_reply(250, "2.0.0", "Ok"))  # RFC 5321 4.1.1.9: any argument is ignored

    def _quit(self, argument: str) -> None:
        if argument:
            self._send(_reply(501, "5.5.4", "Syntax: QUIT"), error=True)
            return
        self._send(_reply(221, "2.0.0", "Bye"))
        self._close("QUIT")

    def _vrfy(self, argument: str) -> None:
        if not argument:
            self._send(_reply(501, "5.5.4", "Syntax: VRFY address"), error=True)
            return
        # RFC 5321 3.5.3: 252, the mailbox is neither confirmed nor denied.
        text = "Cannot VRFY user, but will accept message and attempt delivery"
        self._send(_reply(252, "2.0.0", text))

    def _help(self, argument: str) -> None:
        words = " ".join(v.value for v in _Verb)
        self._send(_reply(214, "2.0.0", f"Commands: {words}"))

    def _mail(self, argument: str) -> None:
        parsed = _path_and_params(argument, "FROM:")
        if parsed is None:
            self._send(_reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"), error=True)
            return
        path, params = parsed
        options = self._mail_options(params)
        if isinstance(options, Reply):
            self._send(options, error=True)
            return
        sender = None
        if path:
            if not path.isascii() and not options.smtputf8:
                self._send(_NEED_SMTPUTF8, error=True)
                return
            try:
                sender = Address.parse(path)
            except AddressError:
                self._send(_reply(501, "5.1.7", "Bad sender address syntax"), error=True)
                return
        self._txn = _Transaction(sender, options)
        self._state = ServerState.MAIL
        self._send(_reply(250, "2.1.0", "Ok"))

    def _mail_options(self, params: list[str]) -> MailOptions | Reply:
        """SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531 3.4); no others are offered,
        so any other is 555 (RFC 5321 4.1.1.11)."""
        size: int | None = None
        body: Body | None = None
        smtputf8 = False
        seen: set[str] = set()
        for param in params:
            keyword, equals, value = param.partition("=")
            keyword = keyword.upper()
            if keyword in seen:
                return _reply(501, "5.5.4", f"Error: duplicate {keyword} parameter")
            seen.add(keyword)
            if keyword == "SIZE":
                if not (value.isascii() and value.isdigit() and len(value) <= 20):
                    return _reply(501, "5.5.4", "Bad message size syntax")
                size = int(value)
                if size > self.config.max_message_size:
                    return _TOO_BIG
            elif keyword == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                body = Body(value.upper())
            elif keyword == "SMTPUTF8" and not equals:
                smtputf8 = True
            else:
                return _reply(555, "5.5.4", f"Unsupported option: {_echo(param)}")
        return MailOptions(size=size, body=body, smtputf8=smtputf8)

    def _rcpt(self, argument: str) -> None:
        txn = self._txn
        assert txn is not None  # OUT_OF_SEQUENCE leaves RCPT to the MAIL state
        parsed = _path_and_params(argument, "TO:")
        if parsed is None:
            self._send(_reply(501, "5.5.4", "Syntax: RCPT TO:<address>"), error=True)
            return
        path, params = parsed
        if params:  # no RCPT extension (DSN) is offered
            self._send(_reply(555, "5.5.4", f"Unsupported option: {_echo(params[0])}"), error=True)
            return
        if not path.isascii() and not txn.options.smtputf8:
            self._send(_NEED_SMTPUTF8, error=True)
            return
        try:
            if path.lower() == "postmaster":  # RFC 5321 4.5.1: taken without a domain
                address = Address("postmaster", self.config.host)
            else:
                address = Address.parse(path)
        except AddressError:
            self._send(_reply(501, "5.1.3", "Bad recipient address syntax"), error=True)
            return
        if len(txn.recipients) >= self.config.max_recipients:
            txn.overshoot += 1
            error = txn.overshoot > self.config.recipient_overshoot
            self._send(_reply(452, "4.5.3", "Error: too many recipients"), error=error)
            return
        txn.recipients.append(Recipient(address))
        self._send(_reply(250, "2.1.5", "Ok"))

    def _data_command(self, argument: str) -> None:
        txn = self._txn
        assert txn is not None  # OUT_OF_SEQUENCE leaves DATA to the MAIL state
        if argument:
            self._send(_reply(501, "5.5.4", "Syntax: DATA"), error=True)
        elif not txn.recipients:
            # RFC 2920 3.1: after pipelined RCPTs that all failed, DATA gets 554.
            self._send(_reply(554, "5.5.1", "Error: no valid recipients"), error=True)
        else:
            self._state = ServerState.DATA
            self._discarding = False
            self._start(txn)
            self._send(Reply(354, ("End data with <CR><LF>.<CR><LF>",)))

    def _start(self, txn: _Transaction) -> None:
        txn.started = True
        self._events.append(MessageStarted(txn.envelope()))

    # -- DATA content (RFC 5321 4.1.1.4, 4.5.2) ---------------------------------------------

    def _data(self) -> None:
        """Whole lines of content up to CRLF.CRLF, un-stuffed; a partial line waits (it is at
        most MAX_TEXT_LINE octets, or the message is refused and it is dropped)."""
        if self._discarding:
            self._skip_data()
            return
        buffer, pos = self._buffer, self._pos
        last = buffer.rfind(b"\n", pos)
        if last < 0:
            if len(buffer) - pos > MAX_TEXT_LINE:
                self._refuse_content("long")
                self._tail = buffer[-4:]
                self._discarding, self._pos = True, len(buffer)
            return
        block = buffer[pos : last + 1]
        # Content taken so far is canonical, so each block starts after a CRLF (or the 354).
        if block[:3] == b".\r\n":
            end = 0
        else:
            found = block.find(_END)
            end = found + 2 if found >= 0 else -1
        content = block if end < 0 else block[:end]
        if content:
            self._content(content)
        if end >= 0:
            self._pos = pos + end + 3
            self._end_of_content()
        elif self._discarding:
            self._tail, self._pos = block[-4:], last + 1
        else:
            self._pos = last + 1

    def _content(self, stuffed: bytes) -> None:
        """Whole lines of content: un-stuff them, check them, pass them on."""
        txn = self._txn
        assert txn is not None
        # RFC 5321 4.5.2: a line's first period is removed (a line of just "." ended the data).
        text = stuffed[1:] if stuffed[:1] == b"." else stuffed
        text = text.replace(b"\r\n.", b"\r\n")
        problem = txn.lines.check(text)
        if problem is not None:
            self._refuse_content(problem)
            self._discarding = True
        elif not self._pass_on(txn, text):
            self._discarding = True

    def _skip_data(self) -> None:
        """Refused content: look only for CRLF.CRLF, keeping four octets across reads."""
        window = self._tail + self._buffer[self._pos :]
        found = window.find(_END)
        if found < 0:
            self._tail, self._pos = window[-4:], len(self._buffer)
            return
        self._pos += found + len(_END) - len(self._tail)
        self._end_of_content()

    def _pass_on(self, txn: _Transaction, text: bytes) -> bool:
        """Hand content to the caller, within the size limit (RFC 1870 6.2: 552)."""
        txn.size += len(text)
        if txn.size > self.config.max_message_size:
            self._refuse_content(_TOO_BIG)
            return False
        self._events.append(MessageData(text))
        return True

    def _refuse_content(self, problem: str | Reply) -> None:
        """The message is refused; the reply goes when its content ends."""
        txn = self._txn
        assert txn is not None
        if txn.refusal is None:
            if isinstance(problem, Reply):
                txn.refusal = problem
            elif problem == "long":
                txn.refusal = _LONG_LINE
            else:
                txn.refusal = self._bare[problem]
            self._abort(str(txn.refusal))

    def _end_of_content(self) -> None:
        """CRLF.CRLF, or the last octet of BDAT ... LAST."""
        txn = self._txn
        assert txn is not None
        self._discarding, self._tail = False, b""
        if txn.refusal is None and self._state is ServerState.CHUNK:
            problem = "CR" if txn.lines.cr else None
            if problem is None and txn.lines.length:  # RFC 3030: content need not end in CRLF
                self._pass_on(txn, b"\r\n")
            elif problem is not None:
                self._refuse_content(problem)
        if txn.refusal is not None:
            self._send(txn.refusal, error=True)
            self._txn, self._state = None, ServerState.READY
            return
        self._state = ServerState.VERDICT
        self._events.append(MessageReceived(txn.envelope(), txn.size, txn.chunked))

    # -- BDAT (RFC 3030) --------------------------------------------------------------------

    def _bdat(self, argument: str) -> None:
        words = argument.split(" ")
        size_text = words[0]
        if (
            not (size_text.isascii() and size_text.isdigit() and len(size_text) <= 20)
            or len(words) > 2
            or (len(words) == 2 and words[1].upper() != "LAST")
        ):
            self._bad_bdat()
            return
        self._chunk_size = self._chunk_left = int(size_text)
        self._chunk_last = len(words) == 2
        self._resume = self._state
        txn = self._txn
        refusal = OUT_OF_SEQUENCE.get((self._state, _Verb.BDAT))
        if refusal is not None or txn is None:
            self._orphan = _Transaction(None, MailOptions())  # read the chunk for nothing
            self._orphan.refusal = _reply(*(refusal or _NEED_MAIL))
        elif txn.failed:
            # RFC 3030 4.2: chunks pipelined after a refused one are read and discarded.
            text = f"Error: {self._chunk_size} octets discarded after an earlier error"
            txn.refusal = _reply(554, "5.5.0", text)
        elif not txn.recipients:
            txn.refusal = _reply(554, "5.5.1", "Error: no valid recipients")
        elif txn.size + self._chunk_size > self.config.max_message_size:
            self._refuse_content(_TOO_BIG)  # before it is read, as Postfix does
        else:
            if self._chunk_size == 0 and not self._chunk_last:
                self._idle()
            txn.chunked = True
            if not txn.started:
                self._start(txn)
        self._state = ServerState.CHUNK

    def _chunk(self) -> None:
        """The octets of a BDAT chunk, passed on as they come (or dropped once refused)."""
        txn = self._orphan or self._txn
        assert txn is not None
        take = min(self._chunk_left, len(self._buffer) - self._pos)
        if not take and self._chunk_left:
            return
        piece = self._buffer[self._pos : self._pos + take]
        self._pos += take
        self._chunk_left -= take
        if piece and txn.refusal is None:
            problem = txn.lines.check(piece)
            if problem is not None:
                self._refuse_content(problem)
            else:
                self._pass_on(txn, piece)
        if not self._chunk_left:
            self._end_of_chunk(txn)

    def _end_of_chunk(self, txn: _Transaction) -> None:
        if self._orphan is not None:  # no transaction to change
            self._orphan = None
            self._send(txn.refusal or _reply(*_NEED_MAIL), error=True)
            self._state = self._resume
        elif self._chunk_last:
            self._end_of_content()  # the reply, or MessageReceived
        elif txn.refusal is not None:
            self._send(txn.refusal, error=True)
            txn.failed, txn.refusal = True, None
            self._state = ServerState.CHUNKING
        else:
            self._send(_reply(250, "2.0.0", f"Ok: {self._chunk_size} bytes"))
            self._state = ServerState.CHUNKING


_BAD_BDAT = _reply(521, "5.5.4", "Syntax: BDAT count [LAST]")
_NEED_SMTPUTF8 = _reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
_TOO_BIG = _reply(552, "5.3.4", "Message size exceeds fixed limit")
_LONG_LINE = _reply(554, "5.6.0", f"Error: message has a line over {MAX_TEXT_LINE} octets")

_HANDLERS: dict[_Verb, Callable[[ServerConnection, str], None]] = {
    _Verb.HELO: ServerConnection._helo,
    _Verb.EHLO: ServerConnection._ehlo,
    _Verb.MAIL: ServerConnection._mail,
    _Verb.RCPT: ServerConnection._rcpt,
    _Verb.DATA: ServerConnection._data_command,
    _Verb.RSET: ServerConnection._rset,
    _Verb.NOOP: ServerConnection._noop,
    _Verb.QUIT: ServerConnection._quit,
    _Verb.VRFY: ServerConnection._vrfy,
    _Verb.HELP: ServerConnection._help,
}


def _is_bdat(line: bytes) -> bool:
    """Whether ``line`` may be meant as BDAT (RFC 3030 2): its first word, in any case, and
    leading blanks allowed, as a lenient client or relay would read it."""
    word = line.lstrip(b" \t")
    return word[:4].upper() == b"BDAT" and not word[4:5].isalnum()


def _echo(text: str) -> str:
    """Client text fit to repeat in a reply: printable ASCII, short."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in text[:64])
    return cleaned + ("..." if len(text) > 64 else "")


def _path_and_params(argument: str, keyword: str) -> tuple[str, list[str]] | None:
    """``FROM:<path> params`` (``TO:`` for RCPT) as the path without brackets or a source
    route, and the parameters; None when it is not that shape (RFC 5321 4.1.2)."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword) :].lstrip(" ")  # "MAIL FROM: <a@b>" is common enough
    if rest[:1] != "<":
        return None
    quoted = False
    index = 1
    while index < len(rest):
        char = rest[index]
        if quoted and char == "\\":
            index += 1
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            break
        index += 1
    else:
        return None
    path, params = rest[1:index], rest[index + 1 :]
    if params and params[0] != " ":
        return None
    if path.startswith("@"):
        # RFC 5321 4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">", A-d-l = At-domain *( ","
        # At-domain ): checked, then ignored (4.1.1.2, C); a Mailbox must follow it.
        route, colon, path = path.partition(":")
        if not colon or not path or not all(map(_at_domain, route.split(","))):
            return None
    return path, [p for p in params.split(" ") if p]


def _at_domain(text: str) -> bool:
    """``@domain`` (RFC 5321 4.1.2 At-domain; a Domain, not an address literal)."""
    if text[:1] != "@" or text[1:2] == "[":
        return False
    try:
        validate_domain(text[1:])
    except AddressError:
        return False
    return True
