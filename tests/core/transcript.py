"""Replays S:/C: transcripts against the sans-I/O connection (go-smtp client_test style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mxsend.protocol import (
    ClientConfig,
    ClientConnection,
    Event,
    RemoteProtocolError,
    TLSRequested,
)

OnEvent = Callable[[ClientConnection, Event], None]


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


def _pump(conn: ClientConnection, events: list[Event], on_event: OnEvent) -> Callable[[], None]:
    def pump() -> None:
        while (event := conn.next_event()) is not None:
            events.append(event)
            if isinstance(event, TLSRequested):
                conn.tls_established()
            on_event(conn, event)

    return pump


def _chunks(data: bytes, bytewise: bool) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))] if bytewise else [data]


def _play(
    conn: ClientConnection,
    groups: list[tuple[str, bytes]],
    pump: Callable[[], None],
    bytewise: bool,
) -> None:
    for side, data in groups:
        if side == "S":
            for chunk in _chunks(data, bytewise):
                conn.receive_data(chunk)
                pump()
        else:
            sent = conn.data_to_send()
            assert sent == data, f"client sent {sent!r}, transcript has {data!r}"


def replay(
    text: str,
    on_event: OnEvent,
    *,
    config: ClientConfig | None = None,
    bytewise: bool = False,
) -> tuple[ClientConnection, list[Event]]:
    """Feed each S: group (whole, or one byte at a time) and check that what the client
    sends between them is exactly the C: group."""
    conn = ClientConnection(config or ClientConfig("client.example"))
    events: list[Event] = []
    _play(conn, parse(text), _pump(conn, events, on_event), bytewise)
    assert conn.data_to_send() == b"", "client sent more than the transcript"
    return conn, events


class LastWrite(NamedTuple):
    """How the connection took the transcript's last S: group."""

    error: RemoteProtocolError | None  #: raised by next_event() while it was fed
    events: list[Event]  #: the events that group produced
    sent_after: bytes  #: what data_to_send() hands out after it


def replay_last_write(
    text: str, conn: ClientConnection, on_event: OnEvent, *, bytewise: bool = False
) -> LastWrite:
    """Like :func:`replay` up to the transcript's last S: group, which must end it; feeding
    that group stops at the first RemoteProtocolError, which is returned, not raised."""
    groups = parse(text)
    side, last = groups[-1]
    assert side == "S", "the transcript must end with the server's write"
    events: list[Event] = []
    pump = _pump(conn, events, on_event)
    _play(conn, groups[:-1], pump, bytewise)
    del events[:]
    error = None
    try:
        for chunk in _chunks(last, bytewise):
            conn.receive_data(chunk)
            pump()
    except RemoteProtocolError as exc:
        error = exc
    return LastWrite(error, events, conn.data_to_send())
