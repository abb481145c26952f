"""QueueRunner over a real store with a scripted Deliverer and a fake clock: outcomes, the
retry schedule, lifetimes, bounces, and what a failure in the middle leaves behind."""

from __future__ import annotations

import email
import email.policy
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from mxsend.model import FailureKind, MessageReport, RecipientReport
from mxsend.protocol import (
    Address,
    EnhancedStatus,
    Envelope,
    Message,
    Notify,
    RcptOptions,
    Reply,
    Status,
)
from mxsend.queue import DiskStore, MemoryStore, QueueError, RecipientState, RetryPolicy, enqueue
from mxsend.queue._schedule import DestinationBackoff
from mxsend.twisted import PassCounts, QueueRunner

START = 1_700_000_000.0
BODY = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
Script = Callable[[str], tuple[Status, Reply]]


def reply(code: int, text: str) -> Reply:
    return Reply(code, (text,), EnhancedStatus.parse(text.split(maxsplit=1)[0]))


class ScriptedDeliverer:
    """Answers each recipient as ``script`` says, calling on_decided as the real one does."""

    def __init__(
        self, script: Script, mx: str = "mx.example.net", fail: bool = False, dsn: bool = True
    ) -> None:
        self.script, self.mx, self.fail, self.dsn = script, mx, fail, dsn
        self.sent: list[list[str]] = []

    @staticmethod
    def destination(address: Address) -> str:
        return address.domain.lower()

    def deliver(
        self, messages: Sequence[Message], *, on_decided: Any = None
    ) -> Deferred[list[MessageReport]]:
        out = []
        for index, message in enumerate(messages):
            reports = []
            self.sent.append([str(r.address) for r in message.envelope.recipients])
            for r in message.envelope.recipients:
                status, answer = self.script(str(r.address))
                failure = None
                if status is not Status.DELIVERED:
                    failure = FailureKind.CONNECT if answer.local else FailureKind.REPLY
                report = RecipientReport(
                    str(r.address), status, answer, self.mx, "192.0.2.1", failure=failure,
                    dsn_relayed=status is Status.DELIVERED and not self.dsn,
                )  # fmt: skip
                if on_decided is not None and status is not Status.DEFERRED:
                    on_decided(index, report)
                reports.append(report)
            out.append(MessageReport(message, tuple(reports)))
        if self.fail:
            raise CancelledError()
        return succeed(out)


def run(runner: QueueRunner, **kw: Any) -> PassCounts:
    result: list[Any] = []
    Deferred.fromCoroutine(runner.run_pass(**kw)).addBoth(result.append)
    [outcome] = result
    if isinstance(outcome, Exception):
        raise outcome
    if hasattr(outcome, "raiseException"):
        outcome.raiseException()
    assert isinstance(outcome, PassCounts)
    return outcome


def runner(
    store: Any, deliverer: Any, clock: Clock, backoff: Any = None, **policy: Any
) -> QueueRunner:
    return QueueRunner(
        store, deliverer, clock=clock, policy=RetryPolicy(**policy), reporting_mta="mx.local.test",
        rng=random.Random(1), backoff=backoff,
    )  # fmt: skip


def clock() -> Clock:
    c = Clock()
    c.advance(START)
    return c


def queue_one(store: Any, recipients: list[str], sender: str | None = "a@example.com",
              rcpt: RcptOptions | None = None) -> str:  # fmt: skip
    message = Message(Envelope.build(sender, recipients, rcpt_options=rcpt), BODY)
    [entry_id] = enqueue(store, message, now=START)
    return entry_id


def always(status: Status, answer: Reply) -> Script:
    return lambda _address: (status, answer)


def test_deferred_gets_the_first_retry_then_fails_at_expiry_with_one_dsn() -> None:
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    entry_id = queue_one(store, ["b@example.net"])
    busy = ScriptedDeliverer(always(Status.DEFERRED, reply(451, "4.2.1 busy")))
    counts = run(runner(store, busy, c, lifetime=3600))
    assert (counts.deferred, counts.failed, counts.bounces) == (1, 0, 0)
    [r] = store.get(entry_id).recipients
    assert r.state is RecipientState.DEFERRED and r.attempts == 1
    assert 270 <= r.next_attempt - START <= 330  # 5 minutes, 10% jitter
    assert store.scan(c.seconds()) == []  # not due yet
    c.advance(3600)
    counts = run(runner(store, busy, c, lifetime=3600))
    assert (counts.failed, counts.bounces) == (1, 1)
    [dsn] = list(store.entries())
    assert dsn.sender is None and [x.address for x in dsn.recipients] == ["a@example.com"]
    report = email.message_from_bytes(store.body(dsn.id), policy=email.policy.default)
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    _, block = status.get_payload()
    assert block["Action"] == "failed" and block["Status"] == "4.2.1"


def test_a_bounce_that_fails_is_dropped_not_bounced() -> None:
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    queue_one(store, ["b@example.net"], sender=None)
    refused = ScriptedDeliverer(always(Status.FAILED, reply(550, "5.1.1 no such user")))
    counts = run(runner(store, refused, c))
    assert (counts.failed, counts.bounces) == (1, 0)
    assert list(store.entries()) == []


def test_notify_never_gets_no_dsn_and_notify_delay_gets_one_warning() -> None:
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    queue_one(store, ["b@example.net"], rcpt=RcptOptions(frozenset({Notify.NEVER})))
    refused = ScriptedDeliverer(always(Status.FAILED, reply(550, "5.1.1 no such user")))
    assert run(runner(store, refused, c)).bounces == 0
    assert list(store.entries()) == []

    entry_id = queue_one(store, ["c@example.net"], rcpt=RcptOptions(frozenset({Notify.DELAY})))
    busy = ScriptedDeliverer(always(Status.DEFERRED, reply(451, "4.2.1 busy")))
    c.advance(7200)
    assert run(runner(store, busy, c, delay_warning=3600)).bounces == 1
    assert store.get(entry_id).warned
    c.advance(7200)
    assert run(runner(store, busy, c, delay_warning=3600), due_only=False).bounces == 0


def test_an_mx_name_a_dsn_cannot_carry_does_not_lose_the_bounce(tmp_path: Path) -> None:
    store, c = DiskStore(tmp_path / "q"), clock()
    queue_one(store, ["b@example.net"])
    refused = ScriptedDeliverer(always(Status.FAILED, reply(550, "5.1.1 no")), mx="mx_1.evil.")
    counts = run(runner(store, refused, c))
    assert (counts.failed, counts.bounces) == (1, 1)
    [dsn] = list(store.entries())
    assert dsn.sender is None


def test_a_failure_in_the_middle_keeps_what_was_recorded(tmp_path: Path) -> None:
    # Delivered recipients are journaled as they are decided; a cancelled pass must not
    # put them back to pending (they would be sent twice).
    store, c = DiskStore(tmp_path / "q"), clock()
    entry_id = queue_one(store, ["b@example.net", "c@example.net"])

    def half(address: str) -> tuple[Status, Reply]:
        if address.startswith("b"):
            return Status.DELIVERED, reply(250, "2.0.0 ok")
        return Status.DEFERRED, reply(451, "4.2.1 busy")

    try:
        run(runner(store, ScriptedDeliverer(half, fail=True), c))
    except CancelledError:
        pass
    else:
        raise AssertionError("the pass should have been cancelled")
    b, cc = store.get(entry_id).recipients
    assert b.state is RecipientState.DELIVERED and cc.state is RecipientState.PENDING
    again = ScriptedDeliverer(half)
    run(runner(store, again, c))
    assert again.sent == [["c@example.net"]]  # b is never sent again


class FullJournal(MemoryStore):
    def record(self, claim: Any, decided: Any, *, sync: bool = True) -> None:
        raise QueueError("queue entry: cannot record: No space left on device")


def test_a_journal_that_cannot_be_written_does_not_stop_the_pass() -> None:
    store, c = FullJournal(clock=lambda: 0.0), clock()
    # Two recipients: the first delivered is journaled (the entry is not done yet).
    entry_id = queue_one(store, ["b@example.net", "c@example.net"])
    delivered = ScriptedDeliverer(always(Status.DELIVERED, reply(250, "2.0.0 ok")))
    assert run(runner(store, delivered, c)).delivered == 2
    try:
        store.get(entry_id)
    except QueueError:
        pass  # delivered and removed at release
    else:
        raise AssertionError("the delivered entry should be gone")


def test_the_delivery_log_cannot_be_forged_by_a_reply() -> None:
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    queue_one(store, ["b@example.net"])
    hostile = reply(550, "5.1.1 no\r\nmxsend: X: to=<ceo@bank.test>, status=sent \x1b[2J")
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        run(runner(store, ScriptedDeliverer(always(Status.FAILED, hostile)), c))
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "mxsend.delivery"]
    assert lines and all(line.isprintable() for line in lines), lines


def test_a_destination_that_fails_as_a_whole_is_left_alone() -> None:
    # RFC 1123 5.3.1.1: one failed connection defers the destination's other messages too,
    # without each of them trying again; other destinations go on.
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    down = Reply.synthesized(451, "4.4.1", "no mail host could be reached")

    def script(address: str) -> tuple[Status, Reply]:
        if address.endswith("@down.test"):
            return Status.DEFERRED, down
        return Status.DELIVERED, reply(250, "2.0.0 ok")

    backoff = DestinationBackoff(RetryPolicy(), rng=random.Random(2))
    first = queue_one(store, ["a@down.test"])
    deliverer = ScriptedDeliverer(script)
    run(runner(store, deliverer, c, backoff))
    assert deliverer.sent == [["a@down.test"]]
    second = queue_one(store, ["b@down.test", "c@up.test"])
    c.advance(10)
    run(runner(store, deliverer, c, backoff), due_only=False)
    assert deliverer.sent[1:] == [["c@up.test"]]  # neither down.test message was tried
    b, cc = store.get(second).recipients
    assert b.state is RecipientState.PENDING and b.attempts == 0 and b.next_attempt > c.seconds()
    assert cc.state is RecipientState.DELIVERED
    assert store.get(first).recipients[0].attempts == 1
    c.advance(400)  # the block is over: both are tried again, in one batch
    run(runner(store, deliverer, c, backoff))
    assert sorted(deliverer.sent[2:]) == [["a@down.test"], ["b@down.test"]]


def test_notify_success_gets_a_relayed_dsn_only_from_a_server_without_dsn() -> None:
    # RFC 3461 6.2.2.1: a server with DSN takes the duty over; one without it leaves it here.
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    success = RcptOptions(frozenset({Notify.SUCCESS, Notify.FAILURE}))
    ok = always(Status.DELIVERED, reply(250, "2.0.0 ok"))
    queue_one(store, ["b@example.net"], rcpt=success)
    assert run(runner(store, ScriptedDeliverer(ok, dsn=True), c)).bounces == 0
    assert list(store.entries()) == []
    queue_one(store, ["b@example.net"], rcpt=success)
    assert run(runner(store, ScriptedDeliverer(ok, dsn=False), c)).bounces == 1
    [dsn] = list(store.entries())
    report = email.message_from_bytes(store.body(dsn.id), policy=email.policy.default)
    assert "Successful" in str(report["Subject"])
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    _, block = status.get_payload()
    assert block["Action"] == "relayed" and block["Status"] == "2.0.0"
    queue_one(store, ["c@example.net"])  # no NOTIFY: no success notice
    assert run(runner(store, ScriptedDeliverer(ok, dsn=False), c)).bounces == 0


def test_return_to_sender_fails_what_is_left_and_tells_the_sender() -> None:
    store, c = MemoryStore(clock=lambda: 0.0), clock()
    entry_id = queue_one(store, ["b@example.net", "c@example.net"])
    [claim] = store.claim([entry_id])
    queued = QueueRunner(store, None, clock=c, reporting_mta="mx.local.test").return_to_sender(
        claim, "returned by the postmaster"
    )
    assert queued == 1
    [dsn] = list(store.entries())
    assert dsn.sender is None and dsn.recipients[0].address == "a@example.com"
    report = email.message_from_bytes(store.body(dsn.id), policy=email.policy.default)
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    blocks = status.get_payload()[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; b@example.net",
        "rfc822; c@example.net",
    ]


def test_a_relayed_dsn_can_quote_a_large_message_delivered_whole(tmp_path: Path) -> None:
    # finish() removes the entry as its transaction ends; the message file must stay until
    # release, for the DSN built after the session quotes its headers.
    store, c = DiskStore(tmp_path / "q"), clock()
    big = BODY + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * 600  # over 32 KiB
    message = Message(
        Envelope.build("a@example.com", ["b@example.net"],
                       rcpt_options=RcptOptions(frozenset({Notify.SUCCESS}))), big,
    )  # fmt: skip
    enqueue(store, message, now=START)
    ok = always(Status.DELIVERED, reply(250, "2.0.0 ok"))
    assert run(runner(store, ScriptedDeliverer(ok, dsn=False), c)).bounces == 1
    [dsn] = list(store.entries())
    assert dsn.sender is None
    assert sorted(p.suffix for p in (tmp_path / "q" / "entries").iterdir()) == [".json", ".msg"]


def test_a_pass_may_take_only_the_entries_it_selects() -> None:
    # sendmail -qR/-qS: the others are left as they were, unclaimed and untried.
    store = MemoryStore()
    for sender, rcpt in (("a@x.test", "b@y.test"), ("c@x.test", "d@z.test")):
        enqueue(store, Message(Envelope.build(sender, [rcpt]), BODY), now=START)
    deliverer = ScriptedDeliverer(lambda r: (Status.DELIVERED, reply(250, "2.0.0 ok")))
    t = clock()
    counts = run(
        runner(store, deliverer, t),
        select=lambda entry: any("z.test" in r.address for r in entry.recipients),
    )
    assert deliverer.sent == [["d@z.test"]]
    assert (counts.total, counts.delivered) == (1, 1)
    [left] = list(store.entries())
    assert left.sender == "a@x.test" and left.recipients[0].state is RecipientState.PENDING
    assert store.claim([left.id])  # not held by the pass


class CountingSyncs(MemoryStore):
    syncs = 0

    def sync(self) -> None:
        self.syncs += 1
        super().sync()


class HangingDeliverer(ScriptedDeliverer):
    """Decides the first recipient at once, then leaves the batch in flight until ``go``."""

    def __init__(self) -> None:
        super().__init__(always(Status.DELIVERED, reply(250, "2.0.0 ok")))
        self.go: Deferred[list[MessageReport]] = Deferred()

    def deliver(
        self, messages: Sequence[Message], *, on_decided: Any = None
    ) -> Deferred[list[MessageReport]]:
        [done] = super().deliver(messages, on_decided=on_decided).result
        return self.go.addCallback(lambda _: [done])


def test_delivery_records_are_committed_within_the_interval_and_at_the_batch_end() -> None:
    for interval, steps in ((0.2, (0.19, 0.02)), (0.0, (0.0,))):
        store, c = CountingSyncs(clock=lambda: 0.0), clock()
        queue_one(store, ["b@example.net"])
        deliverer = HangingDeliverer()
        pass_ = QueueRunner(
            store, deliverer, clock=c, reporting_mta="mx.local.test", commit_interval=interval
        )
        done: list[PassCounts] = []
        Deferred.fromCoroutine(pass_.run_pass()).addCallback(done.append)
        # Recorded (the entry is gone from a crash of the process), not yet synced.
        assert store.syncs == 0 and not done
        for step in steps[:-1]:
            c.advance(step)
            assert store.syncs == 0, (interval, step)
        c.advance(steps[-1])
        assert store.syncs == 1, interval  # the group commit, with the batch still in flight
        c.advance(60)
        assert store.syncs == 1  # nothing new to commit: no other call was left behind
        deliverer.go.callback(None)
        assert done and done[0].delivered == 1
        assert store.syncs >= 2  # and the batch's end commits what its release wrote


def test_a_report_after_the_batch_was_cancelled_records_nothing(tmp_path: Path) -> None:
    # Past the grace period a batch is cancelled and its claims let go; a session of another
    # destination may still decide a recipient then. That claim is no longer ours.
    store, c = DiskStore(tmp_path / "q"), clock()
    entry_id = queue_one(store, ["b@example.net"])
    late: list[Any] = []

    class Late(ScriptedDeliverer):
        def deliver(self, messages: Sequence[Message], *, on_decided: Any = None) -> Any:
            late.append(on_decided)
            return Deferred()

    deliverer = Late(always(Status.DELIVERED, reply(250, "2.0.0 ok")))
    pass_ = Deferred.fromCoroutine(
        QueueRunner(store, deliverer, clock=c, reporting_mta="mx.local.test").run_pass()
    )
    pass_.addErrback(lambda f: f.trap(CancelledError))
    pass_.cancel()
    late[0](0, RecipientReport("b@example.net", Status.DELIVERED, reply(250, "2.0.0 ok")))
    c.advance(60)
    [entry] = [store.get(entry_id)]
    assert entry.recipients[0].state is RecipientState.PENDING  # still queued, claimable
    assert store.claim([entry_id])


def test_the_commit_interval_is_bounded() -> None:
    for bad in (-1.0, 61.0):
        try:
            QueueRunner(MemoryStore(), None, clock=clock(), reporting_mta="x.test",
                        commit_interval=bad)  # fmt: skip
        except ValueError:
            continue
        raise AssertionError(f"commit_interval={bad} should be refused")
