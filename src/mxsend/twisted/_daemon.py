"""The delivery daemon: a Twisted service that keeps delivering what falls due in a queue.

It scans the queue for due entries (a directory listing and a stat each: nothing is read until
it is claimed), claims them in batches and hands each batch to a :class:`QueueRunner`, with at
most ``workers`` batches in flight. It looks again when a batch ends, when woken (SIGUSR1, from
``send --queue`` or ``queue flush``) and every ``poll`` seconds. Stopping (SIGTERM) stops the
claiming, lets the batches in flight finish for up to ``grace`` seconds, then cancels them:
what they recorded stays recorded, and the kernel frees their claims when the process exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxsend.queue import Claim, QueueStore
from mxsend.twisted._runner import PassCounts, QueueRunner

__all__ = ["QueueDaemon"]

_log = Logger(namespace="mxsend.daemon")
# Orphans (a message file whose entry a crash took) are looked for this often.
_CLEAN_EVERY = 600.0


class QueueDaemon(Service):
    """Delivers a queue's due entries until stopped."""

    def __init__(
        self,
        store: QueueStore,
        make_runner: Callable[[], QueueRunner],
        *,
        clock: IReactorTime,
        workers: int = 4,
        batch: int = 250,
        poll: float = 30.0,
        grace: float = 30.0,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self._store = store
        self._make_runner = make_runner
        self._clock = clock
        self._workers = max(1, workers)
        self._batch = max(1, batch)
        self._poll = poll
        self._grace = grace
        #: (k, n): this process takes first the entries whose id hashes to k of n, so that
        #: n processes serving one queue seldom reach for the same entry.
        self._share = share
        self._runner: QueueRunner | None = None
        self._inflight: set[Deferred[None]] = set()
        #: Ids this process has claimed and not yet let go: a scan while their batches are
        #: in flight finds them still queued, and claiming them again could only fail.
        self._held: set[str] = set()
        self._wakeup: Deferred[None] | None = None
        self._loop: Deferred[None] | None = None
        self._stopping = False
        self.counts = PassCounts()  #: everything done since the start

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._runner = self._make_runner()
        self._stopping = False
        self._clean()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda f: _log.failure("the delivery loop stopped", f))

    def stopService(self) -> Deferred[None]:
        """Stop claiming; give the batches in flight ``grace`` seconds, then cancel them."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        self.wake()
        inflight = list(self._inflight)
        if not inflight:
            return self._loop_done()
        _log.info("stopping: {n} batch(es) in flight, {grace:g}s to finish", n=len(inflight),
                  grace=self._grace)  # fmt: skip
        timer = self._clock.callLater(self._grace, _cancel_all, inflight)
        done: Deferred[None] = DeferredList(inflight, consumeErrors=True).addCallback(
            lambda _: None
        )

        def finished(result: None) -> Deferred[None]:
            if timer.active():
                timer.cancel()
            return self._loop_done()

        return done.addCallback(finished)

    def _loop_done(self) -> Deferred[None]:
        try:
            self._store.sync()  # whatever the cancelled batches recorded
        except Exception:
            _log.failure("the queue could not be synced")
        loop = self._loop
        if loop is None or loop.called:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        loop.addBoth(lambda _: waiting.callback(None))
        return waiting

    def _clean(self) -> None:
        try:
            self._store.clean(self._clock.seconds())  # what writers that died left behind
        except Exception:
            _log.failure("cleaning the queue failed")

    def wake(self) -> None:
        """Look for due work now."""
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.callback(None)

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        cleaned = self._clock.seconds()
        while not self._stopping:
            if self._clock.seconds() - cleaned > _CLEAN_EVERY:
                cleaned = self._clock.seconds()
                self._clean()
            try:
                await self._dispatch()
            except Exception:
                _log.failure("looking for due work failed; trying again")
            if self._stopping:
                break
            await self._sleep(self._poll)

    async def _dispatch(self) -> None:
        """Claim due entries batch by batch while workers are free."""
        ids = self._store.scan(self._clock.seconds())
        if self._held:
            ids = [i for i in ids if i not in self._held]
        k, n = self._share
        if n > 1:
            mine: list[str] = []
            others: list[str] = []
            for i in ids:
                (mine if int(i[-4:], 16) % n == k else others).append(i)
            # Its own share first; then the others', from their far end, latest first,
            # while they work from the front: they meet once, in the middle, instead of
            # reaching for the same entries all the way. Every pass goes on to them, so a
            # share whose process has died is still delivered, however busy this one is.
            ids = mine + others[::-1]
        for start in range(0, len(ids), self._batch):
            while len(self._inflight) >= self._workers and not self._stopping:
                await self._sleep(self._poll)  # woken when a batch ends
            if self._stopping:
                return
            claims = self._store.claim(ids[start : start + self._batch])
            if claims:
                self._start(claims)

    def _start(self, claims: Sequence[Claim]) -> None:
        assert self._runner is not None
        held = [claim.entry.id for claim in claims]
        self._held.update(held)
        job = Deferred.fromCoroutine(self._runner.deliver_claims(claims, self.counts))
        self._inflight.add(job)

        def ended(result: object) -> object:
            self._inflight.discard(job)
            self._held.difference_update(held)
            self.wake()  # a free worker, and perhaps more due work
            return None

        job.addErrback(
            lambda f: None if self._stopping else _log.failure("a delivery batch failed", f)
        )
        job.addBoth(ended)

    async def _sleep(self, seconds: float) -> None:
        wakeup: Deferred[None] = Deferred()
        self._wakeup = wakeup
        call: IDelayedCall = self._clock.callLater(seconds, self.wake)
        try:
            await wakeup
        finally:
            with contextlib.suppress(Exception):
                if call.active():
                    call.cancel()


def _cancel_all(jobs: list[Deferred[None]]) -> None:
    for job in jobs:
        if not job.called:
            job.cancel()
