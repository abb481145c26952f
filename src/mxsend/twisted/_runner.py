"""Deliver queued mail: claim entries, deliver them, record every outcome, schedule retries,
give up after the lifetime, and queue bounces (RFC 3464) and delay warnings.

One pass claims entries in batches; each batch is one :meth:`Deliverer.deliver` call, so the
messages of one destination share its connections. Every delivered recipient is recorded as
its transaction ends: a journal line, or for a message delivered whole the removal of its
entry, written at once, so a crash of the process (even SIGKILL) repeats at most what was in
flight. One group commit makes those records durable against a crash of the machine at most
``commit_interval`` seconds later, and again at the end of each batch (0: at the end of the
reactor turn that read the reply, before any more replies are read). The rest is kept when
the entry is released.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

from mxsend._queuefiles import COMMIT_INTERVAL
from mxsend.model import FailureKind, MessageReport, RecipientReport, printable
from mxsend.protocol import (
    AddressError,
    Body,
    Content,
    Envelope,
    MailOptions,
    Message,
    Notify,
    Reply,
    Ret,
    Status,
    validate_domain,
)
from mxsend.queue._bounce import Action, DSNRecipient, DSNRequest, build_dsn
from mxsend.queue._entry import Attempt, Entry, QueuedRecipient, RecipientState
from mxsend.queue._schedule import DestinationBackoff, RetryPolicy
from mxsend.queue._store import Claim, QueueStore, new_entry
from mxsend.twisted._deliver import Deliverer

__all__ = ["PassCounts", "QueueRunner"]

_MAX_HEADERS = 1 << 20
# Failures that say nothing about a recipient, only that its destination could not be had.
_WHOLE_DESTINATION = frozenset(
    {FailureKind.CONNECT, FailureKind.DNS, FailureKind.REFUSED, FailureKind.TIMEOUT,
     FailureKind.LOST, FailureKind.CLOSING}
)  # fmt: skip


def _undecided(claim: Claim) -> int:
    return sum(not r.state.decided for r in claim.entry.recipients)


DELIVERY_LOG = Logger(namespace="mxsend.delivery")
_STATE_OF = {Status.DELIVERED: RecipientState.DELIVERED, Status.FAILED: RecipientState.FAILED}
_LOG_STATUS = {
    RecipientState.DELIVERED: "sent",
    RecipientState.DEFERRED: "deferred",
    RecipientState.FAILED: "bounced",
    RecipientState.PENDING: "deferred",
}


@dataclass
class PassCounts:
    """What one pass did, recipient by recipient (``bounces``: DSNs queued)."""

    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    bounces: int = 0
    entries: int = 0
    total: int = 0  #: entries the pass set out to try


class QueueRunner:
    """Runs passes over a :class:`QueueStore` with a :class:`Deliverer`."""

    def __init__(
        self,
        store: QueueStore,
        deliverer: Deliverer | None,
        *,
        clock: IReactorTime,
        policy: RetryPolicy | None = None,
        reporting_mta: str,
        rng: random.Random | None = None,
        batch: int = 200,
        backoff: DestinationBackoff | None = None,
        commit_interval: float = COMMIT_INTERVAL,
    ) -> None:
        if not 0 <= commit_interval <= 60:
            raise ValueError(f"commit_interval must be from 0 to 60 seconds, not {commit_interval}")
        self._store = store
        self._commit_interval = commit_interval
        self._deliverer = deliverer  #: None: this runner only returns mail to senders
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._reporting_mta = reporting_mta
        self._rng = rng or random.Random()
        self._batch = batch
        #: Dead-destination memory; None: every destination is tried every time.
        self._backoff = backoff
        self._commit_call: IDelayedCall | None = None

    async def run_pass(
        self,
        *,
        due_only: bool = True,
        progress: Callable[[PassCounts], None] | None = None,
        select: Callable[[Entry], bool] | None = None,
    ) -> PassCounts:
        """Try every entry (``due_only``: every due entry; ``select``: only those it takes)
        once; entries another process holds are left to it."""
        ids = self._store.scan(self._clock.seconds() if due_only else None)
        counts = PassCounts(total=len(ids))
        for start in range(0, len(ids), self._batch):
            claims = self._store.claim(ids[start : start + self._batch])
            if select is not None:
                kept = []
                for claim in claims:
                    if select(claim.entry):
                        kept.append(claim)
                    else:
                        self._abandon(claim)  # untouched, as if this pass had not seen it
                        counts.total -= 1
                claims = kept
            if claims:
                await self.deliver_claims(claims, counts)
            if progress is not None:
                progress(counts)
        return counts

    async def deliver_claims(self, claims: Sequence[Claim], counts: PassCounts) -> None:
        """Deliver the claimed entries' undecided recipients and release every claim."""
        started = self._clock.seconds()
        progress: dict[int, Entry] = {}  #: each claimed entry with what was decided so far
        abandoned = False  # the batch was cancelled: its claims are let go

        def on_decided(index: int, report: RecipientReport) -> None:
            # Only deliveries are made durable at once: they are what a crash must not
            # repeat. A refusal is kept at release; after a crash it is asked again (and
            # refused again), so its bounce is never lost.
            if report.status is not Status.DELIVERED or abandoned:
                return  # a late report of a cancelled batch: a claim let go is not ours
            claim = claims[index]
            entry = progress.get(index, claim.entry)
            current = entry.recipient(report.recipient)
            if current is None or current.state.decided:
                return
            after = self._after(current, report, started, claim.entry)
            entry = progress[index] = entry.with_recipient(after)
            try:
                if all(r.state is RecipientState.DELIVERED for r in entry.recipients):
                    # The common case, one message delivered whole: removing the entry is
                    # its record, cheaper than a journal line that release then removes.
                    self._store.finish(claim, sync=False)
                else:
                    self._store.record(claim, [after], sync=False)
            except Exception as exc:  # the session goes on; release keeps it, or it is resent
                DELIVERY_LOG.error("{id}: {error}", id=claim.entry.id, error=exc)
                return
            # Group commit: every record made until the call comes is made durable by one
            # sync (with an interval of 0, at the end of this turn of the reactor).
            if self._commit_call is None:
                self._commit_call = self._clock.callLater(self._commit_interval, self._commit)

        try:
            # Recipients of a destination that failed as a whole wait for it, untried.
            held_back = [self._held_back(c.entry, started) for c in claims]
            sending = [i for i, c in enumerate(claims) if len(held_back[i]) < _undecided(c)]
            messages = [
                Message(claims[i].entry.envelope(
                            only=self._to_send(claims[i], held_back[i]) if held_back[i] else None),
                        claims[i].content)
                for i in sending
            ]  # fmt: skip
            reports = await self._delivering().deliver(
                messages, on_decided=lambda i, report: on_decided(sending[i], report)
            )
        except BaseException:
            abandoned = True
            self._commit()  # what was recorded is made durable, then stays recorded
            for claim in claims:
                self._abandon(claim)
            raise
        self._commit()
        by_claim = dict(zip(sending, reports, strict=True))
        self._learn(claims, by_claim, started)
        for index, claim in enumerate(claims):
            counts.entries += 1
            try:
                settled = self._wait(claim.entry, held_back[index])
                report = by_claim.get(index)
                if report is not None:
                    early = progress.get(index)
                    settled = self._settle(claim, settled, report, counts, early)
            except Exception as exc:  # one entry never keeps the others claimed
                DELIVERY_LOG.error("{id}: cannot settle: {error}", id=claim.entry.id, error=exc)
                self._abandon(claim)
                continue
            self._release(claim, settled)
        self._commit()

    def _held_back(self, entry: Entry, now: float) -> dict[str, float]:
        """The undecided recipients whose destination is left alone, and until when."""
        if self._backoff is None or not len(self._backoff):  # none is: nothing to look up
            return {}
        out = {}
        for r in entry.recipients:
            if not r.state.decided:
                until = self._backoff.blocked_until(
                    self._delivering().destination(r.recipient.address), now
                )
                if until is not None:
                    out[r.address] = until
        return out

    @staticmethod
    def _to_send(claim: Claim, held_back: dict[str, float]) -> list[str]:
        return [
            r.address
            for r in claim.entry.recipients
            if not r.state.decided and r.address not in held_back
        ]

    @staticmethod
    def _wait(entry: Entry, held_back: dict[str, float]) -> Entry:
        for address, until in held_back.items():
            current = entry.recipient(address)
            if current is not None:
                entry = entry.with_recipient(replace(current, next_attempt=until))
        return entry

    def _learn(
        self, claims: Sequence[Claim], reports: dict[int, MessageReport], now: float
    ) -> None:
        """Remember the destinations that failed as a whole in this batch (every recipient
        deferred without a server's verdict: no host reachable, refused, timed out), and
        forget those that answered (RFC 1123 5.3.1.1)."""
        if self._backoff is None:
            return
        dead: dict[str, bool] = {}
        for index, report in reports.items():
            entry = claims[index].entry
            for rr in report.recipients:
                current = entry.recipient(rr.recipient)
                if current is None:
                    continue
                destination = self._delivering().destination(current.recipient.address)
                whole = rr.status is Status.DEFERRED and rr.failure in _WHOLE_DESTINATION
                dead[destination] = dead.get(destination, True) and whole
        for destination, failed in dead.items():
            if failed:
                until = self._backoff.fail(destination, now)
                DELIVERY_LOG.info(
                    "destination {destination} failed as a whole; left alone for {wait:.0f}s",
                    destination=destination or "smarthost",
                    wait=until - now,
                )
            else:
                self._backoff.succeed(destination)

    def _delivering(self) -> Deliverer:
        if self._deliverer is None:
            raise RuntimeError("this QueueRunner was made without a Deliverer")
        return self._deliverer

    def _abandon(self, claim: Claim) -> None:
        try:
            self._store.abandon(claim)
        except Exception as exc:
            DELIVERY_LOG.error("{id}: {error}", id=claim.entry.id, error=exc)

    def _commit(self) -> None:
        call, self._commit_call = self._commit_call, None
        if call is not None and call.active():
            call.cancel()
        try:
            self._store.sync()
        except Exception as exc:
            DELIVERY_LOG.error("the queue could not be synced: {error}", error=exc)

    def _release(self, claim: Claim, entry: Entry) -> None:
        try:
            self._store.release(claim, entry, sync=False)
        except Exception as exc:
            DELIVERY_LOG.error(
                "{id}: could not save its state: {error}", id=claim.entry.id, error=exc
            )
            self._abandon(claim)

    def _after(
        self, current: QueuedRecipient, report: RecipientReport, now: float, entry: Entry
    ) -> QueuedRecipient:
        state = _STATE_OF.get(report.status, RecipientState.DEFERRED)
        attempt = Attempt(now, state, report.reply, report.mx, report.address)
        attempts = current.attempts + 1
        next_attempt = 0.0
        if state is RecipientState.DEFERRED:
            next_attempt = self._policy.next_attempt(
                arrival=entry.arrival,
                attempts=attempts,
                now=now,
                rng=self._rng,
                bounce=entry.is_bounce,
            )
        return current.after(attempt, attempts, next_attempt)

    def _settle(
        self,
        claim: Claim,
        entry: Entry,
        report: MessageReport,
        counts: PassCounts,
        early: Entry | None = None,
    ) -> Entry:
        """``entry`` (the claimed one) after this attempt: outcomes recorded, the expired
        given up on, and bounces and warnings queued. ``early`` holds what was already made
        durable while the session went on: those recipients are taken as recorded."""
        now = self._clock.seconds()
        newly_failed: list[tuple[QueuedRecipient, bool]] = []  # (recipient, expired)
        relayed: list[tuple[QueuedRecipient, bool]] = []
        expired = self._policy.expired(arrival=entry.arrival, now=now, bounce=entry.is_bounce)
        for rr in report.recipients:
            current = entry.recipient(rr.recipient)
            if current is None or current.state.decided:
                continue  # decided earlier (and journaled) or not ours
            recorded = early.recipient(rr.recipient) if early is not None else None
            if recorded is not None and recorded.state.decided:
                updated = recorded  # as on_decided found it in this pass: one attempt, once
            else:
                updated = self._after(current, rr, now, entry)
            gave_up = updated.state is RecipientState.DEFERRED and expired
            if gave_up:
                updated = replace(updated, state=RecipientState.FAILED, next_attempt=0.0)
            if updated.state is RecipientState.FAILED:
                newly_failed.append((updated, gave_up))
            elif updated.state is RecipientState.DELIVERED and rr.dsn_relayed:
                relayed.append((updated, False))
            entry = entry.with_recipient(updated)
            self._log(entry, updated, rr, gave_up)
            if updated.state is RecipientState.DELIVERED:
                counts.delivered += 1
            elif updated.state is RecipientState.FAILED:
                counts.failed += 1
            else:
                counts.deferred += 1
        if relayed:
            counts.bounces += self._bounce(claim, entry, relayed, Action.RELAYED)
        if newly_failed:
            counts.bounces += self._bounce(claim, entry, newly_failed, Action.FAILED)
        elif self._warn(entry, now):
            deferred = [(r, False) for r in entry.recipients if not r.state.decided]
            if self._bounce(claim, entry, deferred, Action.DELAYED):
                counts.bounces += 1
            entry = replace(entry, warned=True)
        return entry

    def return_to_sender(self, claim: Claim, why: str) -> int:
        """Give up on the claimed entry's undecided recipients now (``queue bounce``): each
        fails with a 550 5.0.0 saying ``why``, the sender gets a DSN, the entry goes. The
        number of DSNs queued."""
        now = self._clock.seconds()
        reply = Reply.synthesized(550, "5.0.0", why)
        entry = claim.entry
        failed = []
        for r in entry.recipients:
            if not r.state.decided:
                updated = r.after(Attempt(now, RecipientState.FAILED, reply), r.attempts, 0.0)
                entry = entry.with_recipient(updated)
                failed.append((updated, False))
        queued = self._bounce(claim, entry, failed, Action.FAILED) if failed else 0
        self._store.release(claim, entry)
        return queued

    def _warn(self, entry: Entry, now: float) -> bool:
        if entry.is_bounce or entry.done:
            return False
        return self._policy.warning_due(arrival=entry.arrival, now=now, warned=entry.warned)

    def _log(self, entry: Entry, r: QueuedRecipient, rr: RecipientReport, expired: bool) -> None:
        status = _LOG_STATUS[r.state]
        reply = rr.reply
        text = printable(" ".join(line for line in reply.lines if line))
        relay = printable(f"{rr.mx}[{rr.address}]") if rr.mx else "none"
        delay = self._clock.seconds() - entry.arrival
        dsn = str(reply.enhanced) if reply.enhanced else f"{reply.code // 100}.0.0"
        # The line is made here (an f-string) and the fields ride along for JSON observers:
        # a format string parsed for every event costs more than the delivery it reports.
        line = (
            f"{entry.id}: to=<{r.address}>, relay={relay}, delay={delay:.1f}, "
            f"attempts={r.attempts}, dsn={dsn}, status={status} ({reply.code} {text})"
            f"{', lifetime expired' if expired else ''}"
        )
        # The event Logger.info would make, handed to its observer directly: one per
        # recipient, so Logger.emit's checks of the level and the format are left out.
        DELIVERY_LOG.observer(
            {"line": line, "id": entry.id, "recipient": r.address, "relay": relay,
             "delay": delay, "attempts": r.attempts, "dsn": dsn, "status": status,
             "code": reply.code, "reply": text, "log_logger": DELIVERY_LOG,
             "log_level": LogLevel.info, "log_namespace": DELIVERY_LOG.namespace,
             "log_source": None, "log_format": "{line}", "log_time": time.time()}
        )  # fmt: skip

    def _bounce(
        self,
        claim: Claim,
        entry: Entry,
        recipients: list[tuple[QueuedRecipient, bool]],
        action: Action,
    ) -> int:
        """Queue one DSN for ``recipients`` to the sender; the number queued (0 or 1). Never
        for a bounce (null sender), nor for recipients who asked for none (NOTIFY)."""
        if entry.sender is None:
            for r, _ in recipients:
                DELIVERY_LOG.warn(
                    "{id}: bounce to <{to}> failed; dropped", id=entry.id, to=r.address
                )
            return 0
        wanted = {Action.DELAYED: Notify.DELAY, Action.RELAYED: Notify.SUCCESS}.get(
            action, Notify.FAILURE
        )
        chosen = [
            (r, expired)
            for r, expired in recipients
            if (r.recipient.options.notify and wanted in r.recipient.options.notify)
            or (not r.recipient.options.notify and action is Action.FAILED)  # RFC 3461 4.1
        ]
        if not chosen:
            return 0
        try:
            now = datetime.fromtimestamp(self._clock.seconds(), UTC)
            until = datetime.fromtimestamp(self._policy.expires_at(entry.arrival), UTC)
            blocks = tuple(
                DSNRecipient(
                    r.address,
                    action,
                    _status(r.reply, expired, action),
                    original_recipient=r.recipient.options.orcpt,
                    remote_mta=_host_name(r.remote),
                    diagnostic=None if r.reply is None or r.reply.local else _text(r.reply),
                    last_attempt=None
                    if r.last_attempt is None
                    else datetime.fromtimestamp(r.last_attempt, UTC),
                    will_retry_until=until if action is Action.DELAYED else None,
                )
                for r, expired in chosen
            )
            dsn = build_dsn(
                DSNRequest(
                    self._reporting_mta,
                    entry.sender,
                    datetime.fromtimestamp(entry.arrival, UTC),
                    blocks,
                    _headers(claim),
                    body_path=claim.path,
                    ret_full=entry.mail.ret is Ret.FULL and claim.path is not None,
                    envid=entry.mail.envid,
                    now=now,
                )
            )
            options = MailOptions(
                size=dsn.size,
                body=Body.EIGHT_BIT_MIME if dsn.eight_bit else None,
                smtputf8=dsn.smtputf8,
            )
            envelope = Envelope.build(None, [entry.sender], options)
            message = Message(envelope, Content.from_chunks(dsn))  # streamed from the file
            bounce = new_entry(message, now=self._clock.seconds())
            self._store.enqueue([(bounce, message)])
        except Exception as exc:  # a bounce must never take the original's state with it
            DELIVERY_LOG.error("{id}: could not queue a DSN: {error}", id=entry.id, error=exc)
            return 0
        DELIVERY_LOG.info("{id}: sender DSN queued as {dsn}", id=entry.id, dsn=bounce.id)
        return 1


def _status(reply: Reply | None, expired: bool, action: Action) -> str:
    """The DSN Status (RFC 3463): the last reply's own code when it fits, else 4.4.7
    (delivery time expired) for the delayed and the expired, 5.0.0 for other failures."""
    code = str(reply.enhanced) if reply is not None and reply.enhanced is not None else None
    if action is Action.RELAYED:
        return code if code is not None and code[0] == "2" else "2.0.0"
    if action is Action.DELAYED:
        return code if code is not None and code[0] == "4" else "4.4.7"
    if code is not None and (code[0] == "5" or (expired and code[0] == "4")):
        return code
    return "4.4.7" if expired else "5.0.0"


def _host_name(name: str | None) -> str | None:
    """``name`` when it is a host name a DSN can carry (DNS can name anything)."""
    if name is None:
        return None
    try:
        validate_domain(name.rstrip("."))
    except AddressError:
        return None
    return name.rstrip(".")


def _text(reply: Reply) -> str:
    return f"{reply.code} " + " ".join(line for line in reply.lines if line)


def _headers(claim: Claim) -> bytes:
    """The queued message's header block (at most 1 MiB), for the DSN."""
    data = b""
    for chunk in claim.content.chunks():
        data += chunk
        for mark in (b"\r\n\r\n", b"\n\n"):
            end = data.find(mark)
            if end >= 0:
                return data[: end + len(mark)]
        if len(data) >= _MAX_HEADERS:
            break
    return data[:_MAX_HEADERS]
