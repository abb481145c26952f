"""The durable queue: a store that keeps every accepted message until each recipient is
decided, the retry schedule, and bounces (RFC 3464).

Pure of Twisted and event loops (a test checks): submitting to the queue is a few file
operations, so a sendmail-style front end can do it without starting a reactor. Delivering
from the queue is the Twisted shell's :class:`mxsend.twisted.QueueRunner`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mxsend.protocol import Message
from mxsend.queue._entry import (
    ENTRY_FORMAT,
    Attempt,
    Entry,
    EntryFormatError,
    QueuedRecipient,
    RecipientState,
)
from mxsend.queue._memory import MemoryStore
from mxsend.queue._schedule import RetryPolicy, format_duration, parse_duration
from mxsend.queue._store import (
    BusyError,
    Claim,
    DiskStore,
    NoSuchEntryError,
    QueueError,
    QueueStats,
    QueueStore,
    default_queue_dir,
    new_entry,
)

__all__ = [
    "ENTRY_FORMAT",
    "Attempt",
    "BusyError",
    "Claim",
    "DiskStore",
    "Entry",
    "EntryFormatError",
    "MemoryStore",
    "NoSuchEntryError",
    "QueueError",
    "QueueStats",
    "QueueStore",
    "QueuedRecipient",
    "RecipientState",
    "RetryPolicy",
    "default_queue_dir",
    "enqueue",
    "format_duration",
    "new_entry",
    "parse_duration",
]


def enqueue(
    store: QueueStore,
    messages: Message | Sequence[Message],
    *,
    now: float | None = None,
    uid: int | None = None,
) -> list[str]:
    """Queue one message or a batch, durably (one commit for the batch); their queue ids.
    Raises :class:`QueueError` with nothing queued when any of them cannot be."""
    batch = [messages] if isinstance(messages, Message) else list(messages)
    when = time.time() if now is None else now
    return store.enqueue([(new_entry(m, now=when, uid=uid), m) for m in batch])
