"""Replays S:/C: transcripts against the sans-I/O connection (go-smtp client_test style)."""

from __future__ import annotations

from collections.abc import Callable

from mxsend.protocol import ClientConfig, ClientConnection, Event, TLSRequested


def parse(text: str) -> list[tuple[str, bytes]]:
    """Group consecutive lines of one side; each line gets its CRLF back."""
    groups: list[tuple[str, bytes]] = []
    for raw in text.strip().splitlines():
        if not raw.strip():
            continue
        side, _, line = raw.strip().partition(": ")
        if raw.strip() in ("C:", "S:"):
            side, line = raw.strip()[0], ""
        assert side in ("C", "S"), raw
        data = line.encode() + b"\r\n"
        if groups and groups[-1][0] == side:
            groups[-1] = (side, groups[-1][1] + data)
        else:
            groups.append((side, data))
    return groups


def replay(
    text: str,
    on_event: Callable[[ClientConnection, Event], None],
    *,
    config: ClientConfig | None = None,
    bytewise: bool = False,
) -> tuple[ClientConnection, list[Event]]:
    """Feed each S: group (whole, or one byte at a time) and check that what the client
    sends between them is exactly the C: group."""
    conn = ClientConnection(config or ClientConfig("client.example"))
    events: list[Event] = []

    def pump() -> None:
        while (event := conn.next_event()) is not None:
            events.append(event)
            if isinstance(event, TLSRequested):
                conn.tls_established()
            on_event(conn, event)

    for side, data in parse(text):
        if side == "S":
            chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
            for chunk in chunks:
                conn.receive_data(chunk)
                pump()
        else:
            sent = conn.data_to_send()
            assert sent == data, f"client sent {sent!r}, transcript has {data!r}"
    assert conn.data_to_send() == b"", "client sent more than the transcript"
    return conn, events
