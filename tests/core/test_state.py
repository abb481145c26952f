"""The session state machine: the table, and random sequences through the real connection."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mxsend.protocol import (
    ClientConfig,
    ClientConnection,
    Envelope,
    LocalProtocolError,
    Plain,
    RemoteProtocolError,
    State,
)
from mxsend.protocol._state import TRANSITIONS, Input, transition


def test_every_pair_has_a_defined_outcome() -> None:
    for state in State:
        for event in Input:
            assert transition(state, event) in State
    assert transition(State.GREETING, Input.BEGIN_TRANSACTION) is State.ERROR
    assert all(target is not State.GREETING for target in TRANSITIONS.values())


REPLIES = [
    b"220 mx ESMTP\r\n",
    b"250-mx\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n",
    b"250-mx\r\n250 STARTTLS\r\n",
    b"250 ok\r\n",
    b"354 go\r\n",
    b"334 \r\n",
    b"235 ok\r\n",
    b"221 bye\r\n",
    b"421 closing\r\n",
    b"450 later\r\n",
    b"502 no\r\n",
    b"554 no\r\n",
    b"220 ready\r\n",
    b"250-partial",
    b"garbage\r\n",
    b"",
]
ENVELOPE = Envelope.build("a@example.com", ["b@example.net", "c@example.net"])

actions = st.one_of(
    st.tuples(st.just("reply"), st.sampled_from(REPLIES)),
    st.tuples(
        st.sampled_from(
            [
                "start_tls",
                "tls_established",
                "authenticate",
                "begin",
                "body",
                "end_body",
                "quit",
                "noop",
                "reset",
                "lost",
            ]
        ),
        st.none(),
    ),
)


def apply(conn: ClientConnection, action: str, data: bytes | None) -> None:
    if action == "reply":
        assert data is not None
        conn.receive_data(data)
        while conn.next_event() is not None:
            pass
    elif action == "start_tls":
        conn.start_tls()
    elif action == "tls_established":
        conn.tls_established()
    elif action == "authenticate":
        conn.authenticate(Plain("u", "p"))
    elif action == "begin":
        conn.begin_transaction(ENVELOPE)
    elif action == "body":
        conn.send_body(b"line\r\n.\r\n")
    elif action == "end_body":
        conn.end_body()
    elif action == "quit":
        conn.quit()
    elif action == "noop":
        conn.noop()
    elif action == "reset":
        conn.reset()
    else:
        conn.connection_lost()


@settings(max_examples=1000)
@given(steps=st.lists(actions, max_size=30), tls=st.booleans())
def test_property_any_sequence_ends_in_a_defined_state(
    steps: list[tuple[str, bytes | None]], tls: bool
) -> None:
    conn = ClientConnection(ClientConfig("client.example", implicit_tls=tls))
    for action, data in steps:
        before = conn.state
        try:
            apply(conn, action, data)
        except LocalProtocolError:
            # Refused locally: nothing changes.
            assert conn.state is before
        except RemoteProtocolError:
            assert conn.state is State.ERROR
        assert conn.state in State
        conn.data_to_send()
    conn.connection_lost()
    assert conn.state is State.CLOSED
