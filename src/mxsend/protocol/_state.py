"""The session state machine of an SMTP client connection, as one table.

Transactions have a lifecycle of their own (a pipelined transaction may still await its final
reply while the next one begins); this table is about what the session as a whole may do.
Any (state, input) pair not in the table leads to ERROR.

::

    GREETING --greeting_ok--> HELLO --hello_ok--> READY
    GREETING --greeting_refused--> QUIT         HELLO --hello_retry (EHLO 5xx: HELO)--> HELLO
    HELLO --hello_refused--> QUIT
    READY --start_tls--> STARTTLS --starttls_ok--> TLS --tls_established--> HELLO
                         STARTTLS --starttls_refused--> READY
    READY --authenticate--> AUTH --auth_challenge--> AUTH --auth_done--> READY
    READY --begin_transaction--> MAIL --end_body | transaction_failed--> READY
    READY --quit--> QUIT --quit_reply--> CLOSED
    any --server_closing | connection_lost--> CLOSED
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "Input", "State", "transition"]


class State(enum.Enum):
    # Members are singletons: identity hashing is C-fast, Enum's own hashes the name.
    __hash__ = object.__hash__

    GREETING = "greeting"  #: connected; waiting for the server's greeting
    HELLO = "hello"  #: EHLO or HELO sent
    READY = "ready"  #: may begin a transaction, STARTTLS, AUTH or QUIT
    STARTTLS = "starttls"  #: STARTTLS sent
    TLS = "tls"  #: STARTTLS accepted; the caller must start TLS now
    AUTH = "auth"  #: an AUTH exchange is under way
    MAIL = "mail"  #: a transaction began and its body has not ended
    QUIT = "quit"  #: QUIT sent; waiting for the reply
    CLOSED = "closed"  #: the session is over
    ERROR = "error"  #: the server broke the protocol; abort the connection


class Input(enum.Enum):
    # Members are singletons: identity hashing is C-fast, Enum's own hashes the name.
    __hash__ = object.__hash__

    # From the caller.
    START_TLS = "start_tls"
    TLS_ESTABLISHED = "tls_established"
    AUTHENTICATE = "authenticate"
    BEGIN_TRANSACTION = "begin_transaction"
    END_BODY = "end_body"
    QUIT = "quit"
    CONNECTION_LOST = "connection_lost"
    # From the server.
    GREETING_OK = "greeting_ok"
    GREETING_REFUSED = "greeting_refused"
    HELLO_OK = "hello_ok"
    HELLO_RETRY = "hello_retry"
    HELLO_REFUSED = "hello_refused"
    STARTTLS_OK = "starttls_ok"
    STARTTLS_REFUSED = "starttls_refused"
    AUTH_CHALLENGE = "auth_challenge"
    AUTH_DONE = "auth_done"
    TRANSACTION_FAILED = "transaction_failed"
    QUIT_REPLY = "quit_reply"
    SERVER_CLOSING = "server_closing"
    PROTOCOL_ERROR = "protocol_error"


_S, _I = State, Input

TRANSITIONS: dict[tuple[State, Input], State] = {
    (_S.GREETING, _I.GREETING_OK): _S.HELLO,
    (_S.GREETING, _I.GREETING_REFUSED): _S.QUIT,
    (_S.HELLO, _I.HELLO_OK): _S.READY,
    (_S.HELLO, _I.HELLO_RETRY): _S.HELLO,
    (_S.HELLO, _I.HELLO_REFUSED): _S.QUIT,
    (_S.READY, _I.START_TLS): _S.STARTTLS,
    (_S.STARTTLS, _I.STARTTLS_OK): _S.TLS,
    (_S.STARTTLS, _I.STARTTLS_REFUSED): _S.READY,
    (_S.TLS, _I.TLS_ESTABLISHED): _S.HELLO,
    (_S.READY, _I.AUTHENTICATE): _S.AUTH,
    (_S.AUTH, _I.AUTH_CHALLENGE): _S.AUTH,
    (_S.AUTH, _I.AUTH_DONE): _S.READY,
    (_S.READY, _I.BEGIN_TRANSACTION): _S.MAIL,
    (_S.MAIL, _I.END_BODY): _S.READY,
    (_S.MAIL, _I.TRANSACTION_FAILED): _S.READY,
    (_S.READY, _I.QUIT): _S.QUIT,
    (_S.QUIT, _I.QUIT_REPLY): _S.CLOSED,
    # A server may close at any time with 421 (RFC 5321 3.8), and the link may drop.
    **{(state, _I.SERVER_CLOSING): _S.CLOSED for state in _S if state is not _S.ERROR},
    **{(state, _I.CONNECTION_LOST): _S.CLOSED for state in _S},
    **{(state, _I.PROTOCOL_ERROR): _S.ERROR for state in _S},
}

del _S, _I


# On Python 3.11 every ``State.READY`` goes through EnumType.__getattr__'s lookup hook (about
# 0.2 us): the states read on the path of every message are looked up once, here.
READY, MAIL, TLS, CLOSED, ERROR = State.READY, State.MAIL, State.TLS, State.CLOSED, State.ERROR


def transition(state: State, event: Input) -> State:
    """The state after ``event`` in ``state``; ERROR for any pair not in the table."""
    return TRANSITIONS.get((state, event), ERROR)
