"""The public names of mxsend.protocol: a change here is an API change."""

from __future__ import annotations

import mxsend.protocol
import mxsend.testing

EXPECTED = {
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
    "CHUNK_SIZE",
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
}


def test_protocol_exports() -> None:
    assert set(mxsend.protocol.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(mxsend.protocol, name) is not None


def test_testing_exports() -> None:
    assert set(mxsend.testing.__all__) == {
        "DEFAULT_EXTENSIONS",
        "FakeResolver",
        "FakeServer",
        "MemoryStore",
        "ReceivedMessage",
        "converse",
    }


def test_twisted_and_routing_exports() -> None:
    import mxsend.routing
    import mxsend.twisted

    assert set(mxsend.twisted.__all__) == {
        "MAX_CNAME_CHAIN", "STAGES", "ClientTLS", "DNSRouter", "Deliverer", "DeliveryOptions",
        "Limits", "MessageReport", "PassCounts", "QueueDaemon", "QueueRunner", "RecipientReport",
        "SMTPClientProtocol", "SessionOutcome", "Smarthost", "TLSInfo", "TLSOptions", "Timeouts",
        "deliver", "make_resolver",
    }  # fmt: skip
    assert set(mxsend.routing.__all__) == {
        "MAX_ADDRESSES", "MAX_SESSIONS", "MXHost", "PolicySource", "Route", "RouteError",
        "TLSPolicy", "interleave", "order_mx",
    }  # fmt: skip
    for module in (mxsend.twisted, mxsend.routing):
        for name in module.__all__:
            assert getattr(module, name) is not None
