"""mxsend's exceptions: one rooted tree. The root and the core's own are defined here; the
others live beside the code that raises them and are drawn here so the whole tree is in one
place.

::

    MxsendError                             (mxsend.protocol)
     +-- ProtocolError
     |    +-- LocalProtocolError          the caller asked for something the protocol forbids;
     |    |    |                          nothing was sent and the connection is unchanged
     |    |    +-- AddressError           a mailbox or domain that is not valid RFC 5321
     |    |    +-- ParameterError         an option value that cannot go on the wire
     |    |    +-- ExtensionRequiredError the message needs an extension the server lacks
     |    |    +-- MessageTooLargeError   larger than the server's declared SIZE
     |    |    +-- LineTooLongError       a line over 998 octets under the REJECT policy
     |    |    +-- CleartextAuthError     AUTH asked for on a channel that is not encrypted
     |    +-- RemoteProtocolError         the server broke the protocol: abort the connection
     |         +-- ResponseInjectionError bytes received after 220 to STARTTLS, before TLS
     |         +-- AuthenticationError    the server failed to prove itself (SCRAM signature)
     +-- ContentError                     message content unreadable, or changed while sent
     +-- RouteError                       no route for a domain (mxsend.routing); .reply says
     |                                    whether it is worth retrying
     +-- MessageError                     a message cannot be prepared (mxsend.message)
     |    +-- UnreadableMessageError      its file or standard input cannot be read
     |    +-- InvalidMessageError         its header block or lines are not acceptable
     |    +-- SpoolError                  standard input cannot be copied to a spool file
     +-- QueueError                       the queue cannot be used or changed (mxsend.queue)
     |    +-- NoSuchEntryError            no entry has that id
     |    +-- BusyError                   another process is delivering that entry now
     |    +-- IntakeError                 a submission through the daemon's socket not taken
     |                                    (mxsend.queue._intake); .code is the reply's
     +-- EntryFormatError                 a queue file this version cannot read (also a
     |                                    ValueError); the entry is moved aside
     +-- DSNError                         a bounce that cannot be built (also a ValueError)
     |    +-- NullSenderError             the null sender never gets one
     +-- ConfigError                      a setting that cannot be used (mxsend.options),
     |                                    named by its path, e.g. ``limits.parallel``
     +-- DkimError                        DKIM signing (mxsend.dkim)
     |    +-- DkimKeyError                a key file that cannot be used (also a ConfigError)
     |    +-- DkimParameterError          a bad domain, selector or key size (also ValueError)
     |    +-- SigningError                a message that cannot be signed (also ValueError)
     |    +-- KeygenError                 a key file that cannot be created
     +-- UserError                        what a command line user asked for (mxsend.cli),
                                          with its sysexits status

Outcomes the server reports with a reply (a 550 to RCPT, a 451 to DATA) are not exceptions:
they are data, in events and results; so are transport failures (connection refused, lost,
timed out, TLS), which the Twisted shell turns into reports with a ``FailureKind``
(mxsend.model) at its one boundary with Twisted, OpenSSL and DNS errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mxsend.protocol._reply import Reply

__all__ = [
    "AddressError",
    "AuthenticationError",
    "CleartextAuthError",
    "ContentError",
    "ExtensionRequiredError",
    "LineTooLongError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "MxsendError",
    "ParameterError",
    "ProtocolError",
    "RemoteProtocolError",
    "ResponseInjectionError",
]


class MxsendError(Exception):
    """Root of every exception mxsend raises on purpose."""


class ProtocolError(MxsendError):
    """An SMTP conversation cannot go on as asked."""


class LocalProtocolError(ProtocolError):
    """Our side asked for something the protocol forbids. Nothing was sent for it."""


class AddressError(LocalProtocolError, ValueError):
    """A mailbox, domain or path that is not valid (RFC 5321 4.1.2, RFC 6531)."""


class ParameterError(LocalProtocolError, ValueError):
    """An option value that cannot be put on the wire (bad ENVID, ORCPT, size...)."""


class _RefusedLocally(LocalProtocolError):
    """A local refusal that maps to an SMTP reply for reporting (code, enhanced status)."""

    code: int = 554
    enhanced: str = "5.0.0"

    @property
    def reply(self) -> Reply:
        """The refusal as a local reply, so callers can report it like a server's."""
        from mxsend.protocol._reply import Reply  # noqa: PLC0415 - _reply imports this module

        return Reply.synthesized(self.code, self.enhanced, str(self))


class ExtensionRequiredError(_RefusedLocally):
    """The message needs an extension the server does not offer (SMTPUTF8, 8BITMIME...)."""

    def __init__(self, message: str, *, code: int = 554, enhanced: str = "5.5.1") -> None:
        super().__init__(message)
        self.code = code
        self.enhanced = enhanced


class MessageTooLargeError(_RefusedLocally):
    """The message is larger than the SIZE the server declared (RFC 1870)."""

    code = 552
    enhanced = "5.3.4"


class LineTooLongError(_RefusedLocally):
    """A line exceeds 998 octets and the line policy is REJECT (RFC 5322 2.1.1)."""

    code = 554
    enhanced = "5.6.0"


class CleartextAuthError(LocalProtocolError):
    """AUTH was requested on a channel that is not encrypted and cleartext was not allowed."""


class RemoteProtocolError(ProtocolError):
    """The server broke the protocol. The connection cannot be trusted any further."""


class ResponseInjectionError(RemoteProtocolError):
    """Bytes arrived after the 220 to STARTTLS and before TLS started (NO STARTTLS, 2021)."""


class AuthenticationError(RemoteProtocolError):
    """The server's SASL messages were malformed or failed verification."""


class ContentError(MxsendError):
    """The message content cannot be read, can be read only once and was, or changed size
    while it was being sent. It concerns one message, never the session."""
