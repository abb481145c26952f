"""CPU time per message through the sans-I/O core: one pipelined transaction (MAIL, RCPT,
DATA, 2 KB body, replies, events) on a reused connection; and a whole session per message
(greeting, EHLO, transaction, QUIT). Prints the median of several runs in microseconds.

    python bench/core.py [--messages N] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import time

from mxsend.protocol import (
    BodySent,
    ClientConfig,
    ClientConnection,
    Envelope,
    MailOptions,
    TransactionCompleted,
    scan_body,
)

EHLO = (
    b"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)
ENVELOPE_REPLIES = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"
FINAL = b"250 2.0.0 queued\r\n"
BODY = (
    b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: benchmark\r\n\r\n"
    + b"The quick brown fox jumps over the lazy dog. 0123456789 .leading dot?\r\n" * 30
)[:2048]


def ready_connection() -> ClientConnection:
    conn = ClientConnection(ClientConfig("client.example", chunking=False))
    conn.receive_data(b"220 mx.example.net ESMTP\r\n")
    conn.next_event()
    conn.data_to_send()
    conn.receive_data(EHLO)
    conn.next_event()
    return conn


def one_transaction(conn: ClientConnection, envelope: Envelope) -> int:
    # As SessionDriver does for small content: given with the transaction, sent on the 354.
    conn.begin_transaction(envelope, BODY)
    sent = len(conn.data_to_send())
    conn.receive_data(ENVELOPE_REPLIES)
    event = conn.next_event()
    assert isinstance(event, BodySent)
    sent += len(conn.data_to_send())
    conn.receive_data(FINAL)
    event = conn.next_event()
    assert isinstance(event, TransactionCompleted)
    assert event.result.recipients[0].reply.code == 250
    return sent


def reused(messages: int, envelope: Envelope) -> float:
    conn = ready_connection()
    start = time.process_time()
    for _ in range(messages):
        one_transaction(conn, envelope)
    return (time.process_time() - start) / messages * 1e6


def session_per_message(messages: int, envelope: Envelope) -> float:
    start = time.process_time()
    for _ in range(messages):
        conn = ready_connection()
        one_transaction(conn, envelope)
        conn.quit()
        conn.data_to_send()
        conn.receive_data(b"221 bye\r\n")
        conn.next_event()
    return (time.process_time() - start) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    info = scan_body(BODY)
    envelope = Envelope.build("alice@example.com", ["bob@example.net"], MailOptions(size=info.size))
    assert len(BODY) == 2048
    reused(200, envelope)  # warm up
    per_txn = [reused(args.messages, envelope) for _ in range(args.runs)]
    per_session = [session_per_message(args.messages, envelope) for _ in range(args.runs)]
    print(f"mxsend core, {args.messages} messages x {args.runs} runs, 2048-octet body")
    for label, runs in (
        ("pipelined transaction, reused connection", per_txn),
        ("whole session per message (EHLO..QUIT)  ", per_session),
    ):
        median = statistics.median(runs)
        print(f"  {label}: {median:7.1f} us/message  (min {min(runs):.1f}, max {max(runs):.1f})")


if __name__ == "__main__":
    main()
