"""How the delivery daemon claims: among the processes of ``--processes N`` each takes its
own share first, then helps with the others' from their far end; and a scan while batches
are in flight never reaches for what they hold."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from mxsend.cli.daemon import daemon_share
from mxsend.protocol import Envelope, Message
from mxsend.queue import Claim, Entry, MemoryStore, new_entry
from mxsend.queue._entry import QueuedRecipient, RecipientState
from mxsend.twisted import QueueDaemon
from mxsend.twisted._runner import PassCounts


class _Delivering:
    """Stands in for a QueueRunner: every claimed entry is delivered at once, in order."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.delivered: list[str] = []

    async def deliver_claims(self, claims: Sequence[Claim], counts: PassCounts) -> None:
        for claim in claims:
            self.delivered.append(claim.entry.id)
            done = tuple(
                QueuedRecipient(r.recipient, RecipientState.DELIVERED, 1)
                for r in claim.entry.recipients
            )
            self.store.release(claim, claim.entry.with_recipients(done))


def _queued(store: MemoryStore, count: int) -> list[str]:
    ids = []
    for n in range(count):
        message = Message(Envelope.build("a@example.com", [f"b{n}@example.net"]), b"x\r\n")
        entry = new_entry(message, now=1000.0 + n)  # due one after the other
        store.enqueue([(entry, message)])
        ids.append(entry.id)
    return ids


def _fresh(now: float, share: int) -> tuple[Entry, Message]:
    """A new entry whose id falls in ``share`` of 2."""
    while True:
        message = Message(Envelope.build("a@example.com", ["b@example.net"]), b"x\r\n")
        entry = new_entry(message, now=now)
        if _share_of(entry.id, 2) == share:
            return entry, message


def _share_of(entry_id: str, n: int) -> int:
    return int(entry_id[-4:], 16) % n


def test_a_process_takes_its_share_then_the_others_latest_first() -> None:
    clock = Clock()
    clock.advance(2000)
    store = MemoryStore(clock=clock.seconds)
    ids = _queued(store, 60)
    runner = _Delivering(store)
    mine = [i for i in ids if _share_of(i, 2) == 1]
    others = [i for i in ids if _share_of(i, 2) == 0]
    assert mine and others
    daemon = QueueDaemon(
        store, lambda: runner,  # type: ignore[arg-type, return-value]
        clock=clock, workers=1, batch=5, poll=1.0, share=(1, 2),
    )  # fmt: skip
    daemon.startService()
    for _ in range(5):
        clock.advance(1.0)
    daemon.stopService()
    assert runner.delivered == mine + others[::-1]
    assert store.scan(None) == []


def test_the_first_of_several_processes_takes_share_zero_of_n() -> None:
    # It used to take (0, 1), every entry, and reached for its children's share all along.
    assert daemon_share(argparse.Namespace(processes=3, worker=None)) == (0, 3)
    assert daemon_share(argparse.Namespace(processes=3, worker="2/3")) == (2, 3)
    assert daemon_share(argparse.Namespace(processes=1, worker=None)) == (0, 1)


class _Recording(MemoryStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock.seconds)
        self.asked: list[list[str]] = []

    def claim(self, ids: Sequence[str]) -> list[Claim]:
        self.asked.append(list(ids))
        return super().claim(ids)


class _Waiting(_Delivering):
    """Holds every batch until told to let them go."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.waiting: list[Deferred[None]] = []

    async def deliver_claims(self, claims: Sequence[Claim], counts: PassCounts) -> None:
        gate: Deferred[None] = Deferred()
        self.waiting.append(gate)
        await gate
        await super().deliver_claims(claims, counts)


def test_a_scan_while_batches_are_in_flight_leaves_them_to_the_process() -> None:
    clock = Clock()
    clock.advance(2000)
    store = _Recording(clock)
    ids = _queued(store, 12)
    runner = _Waiting(store)
    daemon = QueueDaemon(
        store, lambda: runner,  # type: ignore[arg-type, return-value]
        clock=clock, workers=2, batch=5, poll=1.0,
    )  # fmt: skip
    daemon.startService()
    assert store.asked == [ids[:5], ids[5:10]]  # two workers busy; the third batch waits
    runner.waiting[0].callback(None)  # the first batch ends: its worker takes the rest
    assert store.asked[2] == ids[10:]
    clock.advance(1.0)  # a scan while batches 2 and 3 are in flight: it waits for a worker
    runner.waiting[1].callback(None)  # one is free: nothing it scanned is for it to claim
    assert store.asked[3:] == []
    runner.waiting[2].callback(None)
    clock.advance(1.0)
    daemon.stopService()
    assert sorted(runner.delivered) == sorted(ids)


class _Slow(_Delivering):
    """Each batch takes a second of the clock."""

    def __init__(self, store: MemoryStore, clock: Clock) -> None:
        super().__init__(store)
        self.clock = clock

    async def deliver_claims(self, claims: Sequence[Claim], counts: PassCounts) -> None:
        await deferLater(self.clock, 1.0, lambda: None)
        await super().deliver_claims(claims, counts)


def test_another_share_is_delivered_however_busy_a_process_is_with_its_own() -> None:
    # The process that owns it may have died: every pass goes on to the others' entries
    # once it has claimed its own, even while new mail of its own keeps coming.
    clock = Clock()
    clock.advance(2000)
    store = MemoryStore(clock=clock.seconds)
    runner = _Slow(store, clock)
    daemon = QueueDaemon(
        store, lambda: runner,  # type: ignore[arg-type, return-value]
        clock=clock, workers=2, batch=5, poll=1.0, share=(0, 2),
    )  # fmt: skip
    daemon.startService()
    orphan = None
    for tick in range(240):  # new mail, each with a wake, 12 a second
        share = 1 if tick == 24 else 0  # one of the other share, once this one is busy
        entry, message = _fresh(clock.seconds(), share)
        store.enqueue([(entry, message)])
        orphan = entry.id if share else orphan
        daemon.wake()
        clock.advance(1 / 12)
        if orphan in runner.delivered:
            break
    daemon.stopService()
    assert orphan in runner.delivered, f"not delivered among {len(runner.delivered)}"
