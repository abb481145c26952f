"""SMTP commands as values that render their own wire bytes (RFC 5321 4.1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxsend.protocol._errors import LocalProtocolError

__all__ = ["MAX_AUTH_LINE_LENGTH", "MAX_COMMAND_LINE_LENGTH", "Command", "Verb", "command_line"]

# RFC 5321 4.5.3.1.4: 512 octets, plus room for the parameters of extensions (RFC 1869 4.1.2
# allows each MAIL/RCPT extension to add to it).
MAX_COMMAND_LINE_LENGTH = 2048
# RFC 4954 4: AUTH lines (with initial response) may be up to 12288 octets.
MAX_AUTH_LINE_LENGTH = 12288


class Verb(enum.Enum):
    """What a reply answers; also the key of each queued expectation."""

    # Members are singletons: identity hashing is C-fast, Enum's own hashes the name.
    __hash__ = object.__hash__

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    DOT = "."
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


@dataclass(frozen=True, slots=True)
class Command:
    """``verb [argument] [params...]`` CRLF. ``sensitive`` lines are redacted in traces."""

    verb: Verb
    argument: str = ""
    params: tuple[str, ...] = ()
    sensitive: bool = False

    def to_bytes(self) -> bytes:
        words = [] if self.verb is Verb.AUTH and not self.argument else [WORDS[self.verb]]
        if self.argument:
            words.append(self.argument)
        words.extend(self.params)
        return command_line(self.verb, " ".join(words))

    def for_trace(self) -> str:
        if self.sensitive:
            return f"AUTH {self.argument} <redacted>" if self.argument else "<redacted>"
        return self.to_bytes().decode("utf-8").rstrip("\r\n")


WORDS = {verb: verb.value for verb in Verb}  # Enum's .value is a descriptor call
# And on Python 3.11 ``Verb.MAIL`` goes through EnumType.__getattr__'s lookup hook: the verbs
# of every message are looked up once, here.
VERB_MAIL, VERB_RCPT, VERB_DATA, VERB_DOT, VERB_AUTH, VERB_BDAT = (
    Verb.MAIL,
    Verb.RCPT,
    Verb.DATA,
    Verb.DOT,
    Verb.AUTH,
    Verb.BDAT,
)


def command_line(verb: Verb, text: str) -> bytes:
    """``text`` CRLF as wire bytes, refused when it could be read as more than one command."""
    # Defence in depth: values are validated where they are made, but no command line may
    # ever carry a line break or NUL (that is how commands get injected).
    if "\r" in text or "\n" in text or "\0" in text:
        raise LocalProtocolError(f"refusing to send {verb.value} with CR, LF or NUL")
    line = text.encode("utf-8") + b"\r\n"
    limit = MAX_AUTH_LINE_LENGTH if verb is VERB_AUTH else MAX_COMMAND_LINE_LENGTH
    if len(line) > limit:
        raise LocalProtocolError(f"{verb.value} line longer than {limit} octets")
    return line
