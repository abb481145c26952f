"""mxsend's sans-I/O ESMTP client core: bytes in, events out, bytes to send.

No sockets, clock, event loop or TLS library here; the Twisted shell supplies them. Supported:

- RFC 5321 SMTP (replies 4.2, limits 4.5.3, transparency 4.5.2, lost connections 3.8)
- RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2920 PIPELINING, RFC 3030 CHUNKING (BDAT)
- RFC 3207 STARTTLS (with response-injection defence), RFC 8689 REQUIRETLS
- RFC 4954 AUTH: PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), XOAUTH2,
  SCRAM-SHA-256 (RFC 5802, RFC 7677)
- RFC 2034 / RFC 3463 enhanced status codes
- RFC 3461 DSN (RET, ENVID, NOTIFY, ORCPT; xtext), RFC 6533 UTF-8 ORCPT
- RFC 6531 SMTPUTF8, IDNA 2008 domains
"""

from mxsend.protocol._address import (
    MAX_DOMAIN_LENGTH,
    MAX_LOCAL_PART_LENGTH,
    MAX_PATH_LENGTH,
    Address,
    validate_domain,
)
from mxsend.protocol._auth import (
    CramMD5,
    Login,
    Mechanism,
    Plain,
    ScramSHA256,
    XOAuth2,
)
from mxsend.protocol._capabilities import Capabilities
from mxsend.protocol._connection import MAX_AUTH_ROUNDS, ClientConfig, ClientConnection, Trace
from mxsend.protocol._content import CHUNK_SIZE, Content
from mxsend.protocol._encoder import MAX_LINE_OCTETS, BodyEncoder, BodyInfo, LinePolicy, scan_body
from mxsend.protocol._errors import (
    AddressError,
    AuthenticationError,
    CleartextAuthError,
    ContentError,
    ExtensionRequiredError,
    LineTooLongError,
    LocalProtocolError,
    MessageTooLargeError,
    MxsendError,
    ParameterError,
    ProtocolError,
    RemoteProtocolError,
    ResponseInjectionError,
)
from mxsend.protocol._events import (
    Authenticated,
    AuthenticationFailed,
    BodyRequested,
    BodySent,
    Closed,
    Event,
    Greeted,
    Ready,
    RecipientResult,
    ServerClosing,
    SessionRefused,
    Status,
    TLSRefused,
    TLSRequested,
    TransactionCompleted,
    TransactionResult,
)
from mxsend.protocol._options import (
    Body,
    Envelope,
    MailOptions,
    Notify,
    RcptOptions,
    Recipient,
    Ret,
    xtext,
)
from mxsend.protocol._reply import (
    MAX_LINE_LENGTH,
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    EnhancedStatus,
    Reply,
    ReplyParser,
)
from mxsend.protocol._server import (
    MessageAborted,
    MessageData,
    MessageReceived,
    MessageStarted,
    ServerConfig,
    ServerConnection,
    ServerEvent,
    ServerState,
    SessionClosed,
)
from mxsend.protocol._session import Message, SessionDriver
from mxsend.protocol._state import State

__all__ = [
    "CHUNK_SIZE",
    "MAX_AUTH_ROUNDS",
    "MAX_DOMAIN_LENGTH",
    "MAX_LINE_LENGTH",
    "MAX_LINE_OCTETS",
    "MAX_LOCAL_PART_LENGTH",
    "MAX_PATH_LENGTH",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "Address",
    "AddressError",
    "Authenticated",
    "AuthenticationError",
    "AuthenticationFailed",
    "Body",
    "BodyEncoder",
    "BodyInfo",
    "BodyRequested",
    "BodySent",
    "Capabilities",
    "CleartextAuthError",
    "ClientConfig",
    "ClientConnection",
    "Closed",
    "Content",
    "ContentError",
    "CramMD5",
    "EnhancedStatus",
    "Envelope",
    "Event",
    "ExtensionRequiredError",
    "Greeted",
    "LinePolicy",
    "LineTooLongError",
    "LocalProtocolError",
    "Login",
    "MailOptions",
    "Mechanism",
    "Message",
    "MessageAborted",
    "MessageData",
    "MessageReceived",
    "MessageStarted",
    "MessageTooLargeError",
    "MxsendError",
    "Notify",
    "ParameterError",
    "Plain",
    "ProtocolError",
    "RcptOptions",
    "Ready",
    "Recipient",
    "RecipientResult",
    "RemoteProtocolError",
    "Reply",
    "ReplyParser",
    "ResponseInjectionError",
    "Ret",
    "ScramSHA256",
    "ServerClosing",
    "ServerConfig",
    "ServerConnection",
    "ServerEvent",
    "ServerState",
    "SessionClosed",
    "SessionDriver",
    "SessionRefused",
    "State",
    "Status",
    "TLSRefused",
    "TLSRequested",
    "Trace",
    "TransactionCompleted",
    "TransactionResult",
    "XOAuth2",
    "scan_body",
    "validate_domain",
    "xtext",
]
