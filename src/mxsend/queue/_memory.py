"""A queue store in memory, for tests: the same interface as the disk store, with claims as
leases that expire (the shape a store shared by several hosts has)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from mxsend.protocol import Content, ContentError, Message
from mxsend.queue._entry import Entry, QueuedRecipient
from mxsend.queue._store import BusyError, Claim, NoSuchEntryError, QueueError, QueueStats

__all__ = ["MemoryStore"]


@dataclass
class _Kept:
    entry: Entry
    body: bytes
    journal: list[QueuedRecipient]
    lease: tuple[str, float] | None = None  #: (token, until)


class MemoryStore:
    """Entries in a dict. A claim is a lease of ``lease`` seconds by ``clock``; once it has
    expired another claim may take the entry, and the first holder's release is refused."""

    def __init__(self, *, clock: Callable[[], float] = time.time, lease: float = 600.0) -> None:
        self._clock = clock
        self._lease = lease
        self._kept: dict[str, _Kept] = {}
        self._finished: dict[str, str] = {}  #: removed by finish(): id -> lease token

    def enqueue(self, entries: Sequence[tuple[Entry, Message]]) -> list[str]:
        staged = {}
        for entry, message in entries:
            content = message.content
            try:
                body = content if isinstance(content, bytes) else b"".join(content.chunks())
            except ContentError as exc:
                raise QueueError(f"could not queue the message: {exc}") from None
            staged[entry.id] = _Kept(entry, body, [])
        self._kept.update(staged)  # all or nothing
        return list(staged)

    def scan(self, now: float | None = None) -> list[str]:
        due = [
            (kept.entry.due, entry_id)
            for entry_id, kept in self._kept.items()
            if not kept.entry.held and (now is None or kept.entry.due <= now)
        ]
        return [entry_id for _, entry_id in sorted(due)]

    def _leased(self, kept: _Kept) -> bool:
        return kept.lease is not None and kept.lease[1] > self._clock()

    def claim(self, ids: Sequence[str]) -> list[Claim]:
        claims = []
        for entry_id in ids:
            kept = self._kept.get(entry_id)
            if kept is None or kept.entry.held or self._leased(kept):
                continue
            token = secrets.token_hex(8)
            kept.lease = (token, self._clock() + self._lease)
            claims.append(Claim(self._current(kept), Content.from_bytes(kept.body), token))
        return claims

    def _current(self, kept: _Kept) -> Entry:
        entry = kept.entry
        for recipient in kept.journal:
            entry = entry.with_recipient(recipient)
        return entry

    def _holder(self, claim: Claim) -> _Kept:
        kept = self._kept.get(claim.entry.id)
        if kept is None or kept.lease is None or kept.lease[0] != claim.handle:
            raise BusyError(f"the lease on queue entry {claim.entry.id} was lost")
        return kept

    def record(
        self, claim: Claim, decided: Sequence[QueuedRecipient], *, sync: bool = True
    ) -> None:
        self._holder(claim).journal.extend(decided)

    def sync(self) -> None:
        return None  # nothing to make durable

    def finish(self, claim: Claim, *, sync: bool = True) -> None:
        # Gone at once, as on disk; the token lets the holder release or abandon it later.
        self._holder(claim)
        del self._kept[claim.entry.id]
        self._finished[claim.entry.id] = str(claim.handle)

    def release(self, claim: Claim, entry: Entry, *, sync: bool = True) -> None:
        if self._finished.get(entry.id) == claim.handle:
            del self._finished[entry.id]
            return
        kept = self._holder(claim)
        if entry.done:
            del self._kept[entry.id]
        else:
            kept.entry, kept.journal, kept.lease = entry, [], None

    def abandon(self, claim: Claim) -> None:
        if self._finished.get(claim.entry.id) == claim.handle:
            del self._finished[claim.entry.id]
            return
        kept = self._kept.get(claim.entry.id)
        if kept is not None and kept.lease is not None and kept.lease[0] == claim.handle:
            kept.lease = None

    def get(self, entry_id: str) -> Entry:
        kept = self._kept.get(entry_id)
        if kept is None:
            raise NoSuchEntryError(f"no queue entry {entry_id}")
        return self._current(kept)

    def body(self, entry_id: str) -> bytes:
        """The queued message, as it will be sent (for tests)."""
        self.get(entry_id)
        return self._kept[entry_id].body

    def entries(self) -> Iterator[Entry]:
        for entry_id in sorted(self._kept):
            yield self._current(self._kept[entry_id])

    def _free(self, entry_id: str) -> _Kept:
        kept = self._kept.get(entry_id)
        if kept is None:
            raise NoSuchEntryError(f"no queue entry {entry_id}")
        if self._leased(kept):
            raise BusyError(f"queue entry {entry_id} is being delivered now; try again")
        return kept

    def hold(self, entry_id: str) -> None:
        kept = self._free(entry_id)
        kept.entry = replace(self._current(kept), held=True)
        kept.journal = []

    def unhold(self, entry_id: str) -> None:
        kept = self._free(entry_id)
        kept.entry = replace(self._current(kept), held=False)
        kept.journal = []

    def delete(self, entry_id: str) -> None:
        self._free(entry_id)
        del self._kept[entry_id]

    def flush(self, now: float) -> int:
        count = 0
        for kept in self._kept.values():
            if kept.entry.held:
                continue
            count += 1
            kept.entry = replace(
                kept.entry,
                recipients=tuple(
                    r if r.state.decided else replace(r, next_attempt=now)
                    for r in kept.entry.recipients
                ),
            )
        return count

    def clean(self, now: float) -> int:
        return 0  # nothing is ever half-written here

    def stats(self) -> QueueStats:
        return QueueStats.of(self.entries())
