"""Delivery: route each recipient domain, connect, run the session, report every recipient.

Reads top to bottom as ``async def``; the public face returns Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import islice

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint

from mxsend.model import FailureKind, MessageReport, RecipientReport, TLSInfo
from mxsend.options import DeliveryOptions
from mxsend.protocol import (
    Address,
    ClientConfig,
    ClientConnection,
    EnhancedStatus,
    Mechanism,
    Message,
    Recipient,
    Reply,
    SessionDriver,
    Status,
    TransactionResult,
)
from mxsend.protocol._events import DEFERRED, DELIVERED  # no enum lookup hook per recipient
from mxsend.routing import MXHost, PolicySource, Route, RouteError, TLSPolicy
from mxsend.routing._table import Auth, DomainRoute, RouteTable
from mxsend.twisted._dns import DNSRouter
from mxsend.twisted._protocol import SessionOutcome, SMTPClientProtocol
from mxsend.twisted._routes import CredentialsError, RouteState
from mxsend.twisted._tls import ClientTLS

__all__ = ["Decided", "Deliverer", "Reported", "deliver"]

#: ``on_decided(index, report)``: a recipient of ``messages[index]`` was settled for good.
Decided = Callable[[int, RecipientReport], None]
#: ``on_report(index, report)``: every recipient of the message at ``index`` has its outcome.
Reported = Callable[[int, MessageReport], None]


#: Each message's reports by its index in the delivery: one tuple per message, no pairs or
#: lists around it (every object kept per message is one more for the collector to scan).
Reports = dict[int, tuple[RecipientReport, ...]]
#: What the sessions of one destination decided so far: by message index, then recipient.
Found = dict[int, dict[str, RecipientReport]]


def _retry_elsewhere(report: RecipientReport) -> bool:
    """Worth another host: the server closed (421), or the session ended (lost, timed out,
    TLS refused) before the end of data. Never when the outcome is unknown: no duplicates."""
    if report.status is not DEFERRED or report.outcome_unknown:
        return False
    if report.failure is FailureKind.CONTENT:
        return False  # the message's own content could not be read: no host would change that
    return report.reply.code == 421 or report.reply.local


class Deliverer:
    """Delivers messages to their recipients' MX hosts, or through a smarthost.

    ``reactor`` makes TCP connections; ``clock`` (by default the reactor itself) gives the
    time for elapsed times and deadlines; ``router`` answers DNS questions. Nothing global: a
    queue can run many of these side by side.

    ``routes`` (a config file's) decide per recipient domain: a relay or the MX hosts, the
    TLS policy, AUTH, and a destination's concurrency and rate. A domain no route matches
    goes through ``options.smarthost`` when there is one, which also takes the place of a
    ``*`` route. ``state`` holds what Deliverers of one process share about routes (pass the
    same one to each, as a daemon does, for the limits to hold across them).
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        router: DNSRouter,
        options: DeliveryOptions,
        *,
        clock: IReactorTime | None = None,
        routes: RouteTable | None = None,
        state: RouteState | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else IReactorTime(reactor)
        self._router = router
        self._options = options
        self._routes = routes
        self._state = state if state is not None or routes is None else RouteState(reactor)

    def deliver(
        self, messages: Sequence[Message], *, on_decided: Decided | None = None
    ) -> Deferred[list[MessageReport]]:
        """Fires with one report per message, in order; never fails for a recipient's sake.

        ``on_decided(index, report)`` is called, while delivery goes on, for each recipient
        of ``messages[index]`` as soon as it is delivered or refused for good: a queue makes
        that durable before the next transaction. Deferred recipients are only in the result.
        """
        return Deferred.fromCoroutine(self._deliver(list(messages), on_decided))

    def stream(
        self,
        messages: Iterable[Message],
        on_report: Reported,
        *,
        on_decided: Decided | None = None,
        window: int = 1000,
    ) -> Deferred[int]:
        """Deliver ``messages`` as they are read, ``window`` at a time, and pass each one's
        report to ``on_report(index, report)`` as soon as its window is settled; nothing is
        kept afterwards, so memory stays bounded however many there are (read them from a
        generator). Fires with the number of messages. ``on_decided`` is as for
        :meth:`deliver`, with indices counted over the whole stream."""
        if window < 1:
            raise ValueError("window must be at least 1")
        return Deferred.fromCoroutine(self._stream(iter(messages), on_report, on_decided, window))

    async def _stream(
        self,
        messages: Iterator[Message],
        on_report: Reported,
        on_decided: Decided | None,
        window: int,
    ) -> int:
        done = 0
        while batch := list(islice(messages, window)):
            decided = on_decided if on_decided is None or not done else _shifted(on_decided, done)
            reports = await self._deliver(batch, decided)
            del batch  # the reports hold the messages until they are passed on
            for index, report in enumerate(reports):
                on_report(done + index, report)
            done += len(reports)
        return done

    async def _deliver(
        self, messages: list[Message], on_decided: Decided | None
    ) -> list[MessageReport]:
        # Each destination's messages by their index (a dict: no pair kept per message).
        groups: dict[str, dict[int, Message]] = {}
        split: set[int] = set()  # messages whose recipients go to more than one destination
        if self._options.smarthost and self._routes is None:
            groups[""] = dict(enumerate(messages))
        destination = self.destination
        for index, message in enumerate(messages if not groups else ()):
            recipients = message.envelope.recipients
            keys = [destination(r.address) for r in recipients]
            first = keys[0]
            if all(key == first for key in keys):
                groups.setdefault(first, {})[index] = message
                continue
            split.add(index)
            by_domain: dict[str, list[Recipient]] = {}
            for recipient, key in zip(recipients, keys, strict=True):
                by_domain.setdefault(key, []).append(recipient)
            for domain, some in by_domain.items():
                part = Message(replace(message.envelope, recipients=tuple(some)), message.content)
                groups.setdefault(domain, {})[index] = part
        semaphore = DeferredSemaphore(self._options.limits.parallel)
        jobs = [
            semaphore.run(self._destination, domain, group, on_decided)
            for domain, group in groups.items()
        ]
        whole: dict[int, tuple[RecipientReport, ...]] = {}
        found: dict[tuple[int, str], RecipientReport] = {}
        for job in jobs:
            for index, reports in (await job).items():
                if index not in split:
                    whole[index] = reports  # in the envelope's order already
                    continue
                for report in reports:
                    found[(index, report.recipient)] = report
        return [
            MessageReport(
                message,
                whole[i]
                if i not in split
                else tuple(found[(i, str(r.address))] for r in message.envelope.recipients),
            )
            for i, message in enumerate(messages)
        ]

    def destination(self, address: Address) -> str:
        """Which destination ``address`` is delivered through: its domain; ``""`` for the
        smarthost (or the ``*`` route's relay); a relay route's key (``example.com``,
        ``.example.com``) for the domains it relays. Messages are grouped by it."""
        domain = address.domain.lower()
        found = self._matched(domain)
        if found is None:
            return "" if self._options.smarthost else domain
        key, route = found
        if route.relay is None:
            return domain
        return "" if key == "*" else key

    def _matched(self, domain: str) -> tuple[str, DomainRoute] | None:
        if self._routes is None:
            return None
        found = self._routes.match(domain)
        if found is not None and found[0] == "*" and self._options.smarthost:
            return None  # the smarthost takes the place of the default route
        return found

    def configured(self, destination: str) -> DomainRoute | None:
        """The route from ``routes`` a destination (see :meth:`destination`) or domain
        takes; None: the smarthost, or the MX hosts under the options' policy."""
        if self._routes is None:
            return None
        if not destination:
            return None if self._options.smarthost else self._routes.routes.get("*")
        if destination.startswith("."):
            return self._routes.routes.get(destination)
        found = self._matched(destination)
        return None if found is None else found[1]

    def configured_tls(self, route: DomainRoute) -> TLSPolicy:
        """The TLS policy a configured ``route`` gets (see ``RouteTable.policy``)."""
        assert self._routes is not None  # a configured route comes from the table
        return self._routes.policy(route, self._options.tls.policy)[0]

    async def route(self, domain: str) -> Route:
        """The route for ``domain`` (any domain with a smarthost): its hosts from DNS, its
        port, and the TLS policy it gets, with where the policy came from."""
        options = self._options
        configured = self.configured(domain)
        if configured is not None:
            return await self._configured_route(domain, configured)
        source = PolicySource.DEFAULT if options.tls.policy is None else PolicySource.OPTION
        tls = options.tls_policy
        if self._routes is not None:
            tls, source = self._routes.floored(tls, source)
        smarthost = options.smarthost
        if smarthost is None:
            hosts = await self._router.mx_hosts(domain)
            return Route(domain, tuple(hosts), options.mx_port, tls, source)
        addresses = await self._router.addresses(smarthost.host)
        host = MXHost(smarthost.host, 0, addresses)
        return Route("", (host,), smarthost.port, tls, source, smarthost.implicit_tls)

    async def _configured_route(self, destination: str, configured: DomainRoute) -> Route:
        """The TLS policy as :meth:`RouteTable.policy` decides it (verify for AUTH)."""
        assert self._routes is not None  # a configured route comes from the table
        relay = configured.relay
        tls, source = self._routes.policy(configured, self._options.tls.policy)
        if relay is None:
            hosts = await self._router.mx_hosts(destination)
            return Route(destination, tuple(hosts), self._options.mx_port, tls, source)
        addresses = await self._router.addresses(relay.host)
        host = MXHost(relay.host, 0, addresses)
        return Route(destination, (host,), relay.port, tls, source, relay.implicit_tls)

    async def _destination(
        self, domain: str, group: dict[int, Message], on_decided: Decided | None
    ) -> Reports:
        """Route once, then spread the destination's messages over up to ``connections``
        concurrent sessions (a route's ``concurrency``), each reusing its connection for its
        share; under a route's ``rate``, as many messages at a time as it allows."""
        started = self._clock.seconds()
        try:
            route = await self.route(domain)
        except RouteError as failure:
            return self._finish(group, {}, (failure.reply, FailureKind.DNS), 0, started)
        configured = self.configured(domain)
        connections = self._options.limits.connections
        limit = rate = None
        if configured is not None and self._state is not None:
            if configured.concurrency is not None:
                connections = limit = configured.concurrency
            rate = configured.rate
        out: Reports = {}
        indices = list(group)
        step = len(indices) if rate is None else rate.count
        for start in range(0, len(indices), step):
            batch = indices[start : start + step]
            if rate is not None and self._state is not None:
                await self._state.take(route.destination, rate, len(batch))
            shares = max(1, min(connections, len(batch)))
            parts = [{i: group[i] for i in batch[n::shares]} for n in range(shares)]
            done = await gatherResults(
                [
                    Deferred.fromCoroutine(self._share(limit, route, part, started, on_decided))
                    for part in parts
                ]
            )
            for part in done:
                out.update(part)
        return out

    async def _share(
        self,
        limit: int | None,
        route: Route,
        group: dict[int, Message],
        started: float,
        on_decided: Decided | None,
    ) -> Reports:
        if self._state is None:
            return await self._attempts(route, group, started, on_decided)
        if limit is None:  # no route sets it: the destination's learned concurrency
            window = self._state.window(route.destination)
            await window.acquire()
            delivered, failed = 0, True
            try:
                result = await self._attempts(route, group, started, on_decided)
                delivered, failed = _feedback(result)
                return result
            finally:
                window.release(delivered=delivered, failed=failed)
        # Asked for and acquired in one go: the state drops slots that nobody holds.
        slots = self._state.slots(route.destination, limit)
        await slots.acquire()
        try:
            return await self._attempts(route, group, started, on_decided)
        finally:
            slots.release()

    def _credentials(self, route: Route) -> tuple[Auth | None, Mechanism | None]:
        """What this route authenticates with: a configured route's AUTH, else the
        smarthost's mechanism, only ever for the smarthost's own destination."""
        configured = self.configured(route.destination)
        if configured is not None:
            return configured.auth, None
        smarthost = self._options.smarthost
        return None, smarthost.mechanism if smarthost and not route.destination else None

    async def _attempts(
        self,
        route: Route,
        messages: dict[int, Message],
        started: float,
        on_decided: Decided | None,
    ) -> Reports:
        """Try the hosts in order until every recipient has an outcome that another host
        would not change, within the address and session limits."""
        found: Found = {}
        limits = self._options.limits
        queue = [(h, a) for h in route.hosts for a in h.addresses][: limits.max_addresses]
        policy = route.tls
        last_error = Reply.synthesized(451, "4.4.1", "no mail host could be reached")
        last_failure = FailureKind.CONNECT
        sessions = tried = 0
        auth, mechanism = self._credentials(route)
        renewed = False
        while queue and sessions < limits.max_sessions:
            todo = _todo(messages, found)
            if not todo:
                break
            if auth is not None and self._state is not None:
                try:
                    mechanism = await self._state.mechanism(auth)
                except CredentialsError as exc:
                    last_error = Reply.synthesized(451, "4.7.0", f"no AUTH secret: {exc}")
                    last_failure = FailureKind.AUTH
                    break
            host, address = queue.pop(0)
            tried += 1
            recorder = _Recorder(
                found, list(todo), host, address,
                tried=tried, started=started, clock=self._clock, on_decided=on_decided,
            )  # fmt: skip
            outcome, driver = await self._session(
                host, address, route, todo, policy, recorder=recorder, mechanism=mechanism
            )
            if outcome is None:
                continue  # no connection: the next address does not use up a session
            sessions += 1
            if not renewed and self._renews(driver.auth_failed, auth):
                # A refused token may have expired: ask the command once more, try again.
                renewed = True
                queue.insert(0, (host, address))
                sessions -= 1
                continue
            recorder.refuse_unsent(driver)
            if outcome.tls_handshake_failed and policy is TLSPolicy.MAY and not route.implicit_tls:
                # Opportunistic TLS (RFC 7435): the same address again, in cleartext.
                queue.insert(0, (host, address))
                policy, sessions = TLSPolicy.NONE, sessions - 1
                continue
            if driver.content_positions and driver.unsent:
                # The session was cut for one message's own content; the others did nothing
                # wrong. Each such session settles at least one message, so this ends.
                queue.insert(0, (host, address))
                sessions -= 1
                continue
            policy = route.tls
            if outcome.refused is not None:
                last_error, last_failure = outcome.refused, FailureKind.REFUSED
            elif outcome.closing is not None:
                last_error, last_failure = outcome.closing, FailureKind.CLOSING
            elif outcome.error is not None:
                last_error = Reply.synthesized(451, "4.4.2", outcome.error)
                last_failure = outcome.failure or FailureKind.LOST
        return self._finish(messages, found, (last_error, last_failure), tried, started)

    def _renews(self, refused: Reply | None, auth: Auth | None) -> bool:
        """Whether AUTH was refused with a command-made secret that has been renewed."""
        return (
            refused is not None and not refused.local and auth is not None
            and self._state is not None and self._state.renew(auth)
        )  # fmt: skip

    def _finish(
        self,
        messages: dict[int, Message],
        found: Found,
        last: tuple[Reply, FailureKind],
        tried: int,
        started: float,
    ) -> Reports:
        """Every recipient's report; those no host decided get the ``last`` error."""
        elapsed = self._clock.seconds() - started
        reply, failure = last
        none: dict[str, RecipientReport] = {}
        out: Reports = {}
        for index, message in messages.items():
            decided = found.get(index, none)
            reports = []
            for recipient in message.envelope.recipients:
                address = str(recipient.address)
                report = decided.get(address) or RecipientReport(
                    address,
                    Status.of(reply),
                    reply,
                    attempts=tried,
                    seconds=elapsed,
                    failure=failure,
                )
                reports.append(report)
            out[index] = tuple(reports)
        return out

    async def _session(
        self,
        host: MXHost,
        address: str,
        route: Route,
        todo: dict[int, Message],
        policy: TLSPolicy,
        *,
        recorder: _Recorder,
        mechanism: Mechanism | None = None,
    ) -> tuple[SessionOutcome | None, SessionDriver]:
        """One session with ``host`` at ``address``; ``recorder`` keeps what it decides.
        The outcome is None when no connection was made."""
        options = self._options
        implicit, port = route.implicit_tls, route.port
        config = ClientConfig(
            options.helo_name,
            implicit_tls=implicit,
            allow_cleartext_auth=options.allow_cleartext_auth,
            chunking=options.chunking,
        )
        trace = options.trace
        if trace is not None:
            outer = trace

            def trace(direction: str, line: str) -> None:
                outer(f"[{address}] {direction}", line)  # destinations run side by side

        conn = ClientConnection(config, trace=trace)
        driver = SessionDriver(
            conn,
            todo.values(),
            starttls=policy is not TLSPolicy.NONE and not implicit,
            require_tls=policy.required and not implicit,
            mechanism=mechanism,
            on_result=recorder.result,
            keep_results=False,  # the recorder keeps each result's reports as it comes
        )
        recorder.driver = driver

        def make_tls() -> ClientTLS:
            return ClientTLS(
                host.name, require_verified=policy is TLSPolicy.VERIFY, cafile=options.tls.cafile
            )

        implicit_tls = make_tls() if implicit else None
        protocol = SMTPClientProtocol(
            conn,
            driver,
            clock=self._clock,
            timeouts=options.timeouts,
            starttls=make_tls,
            implicit_tls=implicit_tls,
        )
        recorder.outcome = protocol.outcome
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = endpoint_type(
            self._reactor, address, port, timeout=options.timeouts.connect
        )
        if implicit_tls is not None:
            endpoint = wrapClientTLS(implicit_tls, endpoint)
        if options.trace is not None:
            options.trace("*", f"connecting to {host.name} [{address}]:{port}")
        try:
            await connectProtocol(endpoint, protocol)  # type: ignore[no-untyped-call]
        except Exception as exc:
            if options.trace is not None:
                options.trace("*", f"connection to [{address}]:{port} failed: {exc}")
            return None, driver
        return await protocol.done, driver


def _shifted(on_decided: Decided, offset: int) -> Decided:
    return lambda index, report: on_decided(offset + index, report)


class _Recorder:
    """Keeps what one session decides, recipient by recipient, as each transaction's result
    comes in (SessionDriver's ``on_result``): a long session holds no results until its end.
    Recipients settled for good (delivered, or refused for good) also go to ``on_decided``
    at once; deferred ones wait for the end (another host may still take them)."""

    __slots__ = (
        "address",
        "clock",
        "driver",
        "found",
        "host",
        "indices",
        "on_decided",
        "outcome",
        "started",
        "tried",
    )

    def __init__(
        self,
        found: Found,
        indices: list[int],  # the driver is given todo's messages in this order
        host: MXHost,
        address: str,
        *,
        tried: int,
        started: float,
        clock: IReactorTime,
        on_decided: Decided | None,
    ) -> None:
        self.clock = clock
        self.found = found
        self.indices = indices
        self.host = host
        self.address = address
        self.tried = tried
        self.started = started
        self.on_decided = on_decided
        self.driver: SessionDriver | None = None  # set once made, before any result
        self.outcome: SessionOutcome | None = None  # likewise

    def result(self, position: int, result: TransactionResult) -> None:
        assert self.driver is not None and self.outcome is not None
        index = self.indices[position]
        reports = self._reports(index)
        tls, elapsed = self._now()
        # The server lacked DSN, so NOTIFY went no further (RFC 3461 4.1, 6.2.2.1).
        relayed = bool(result.dropped) and any(
            d.startswith("DSN parameters") for d in result.dropped
        )
        host, address, tried, on_decided = self.host.name, self.address, self.tried, self.on_decided
        for r in result.recipients:
            status, reply = r.status, r.reply
            delivered = status is DELIVERED
            failure = None if delivered else self._failure_of(reply, position)
            report = RecipientReport(
                str(r.recipient), status, reply, host, address, tls, r.outcome_unknown, tried,
                elapsed, failure, relayed and delivered,
            )  # fmt: skip
            reports[report.recipient] = report
            if on_decided is not None and status is not DEFERRED and not r.outcome_unknown:
                on_decided(index, report)

    def refuse_unsent(self, driver: SessionDriver) -> None:
        """The session ended for TLS or AUTH before these messages' turn: say why."""
        refusal = driver.tls_failed or _auth_deferral(driver.auth_failed)
        if refusal is None:
            return
        kind = FailureKind.TLS_REQUIRED if driver.tls_failed else FailureKind.AUTH
        tls, elapsed = self._now()
        status = Status.of(refusal)
        for position, message in zip(driver.unsent_positions, driver.unsent, strict=True):
            reports = self._reports(self.indices[position])
            for recipient in message.envelope.recipients:
                text = str(recipient.address)
                reports[text] = RecipientReport(
                    text, status, refusal, self.host.name, self.address, tls, False, self.tried,
                    elapsed, kind,
                )  # fmt: skip

    def _reports(self, index: int) -> dict[str, RecipientReport]:
        reports = self.found.get(index)
        if reports is None:
            reports = self.found[index] = {}
        return reports

    def _now(self) -> tuple[TLSInfo | None, float]:
        outcome = self.outcome
        assert outcome is not None
        tls = outcome.tls.info if outcome.tls is not None and outcome.tls.info.version else None
        return tls, self.clock.seconds() - self.started

    def _failure_of(self, reply: Reply, position: int) -> FailureKind:
        """What kind of failure decided a recipient of the message at ``position``."""
        if not reply.local:
            # Any 421 ends the session (RFC 5321 3.8): it is the session's closing reply.
            return FailureKind.CLOSING if reply.code == 421 else FailureKind.REPLY
        driver, outcome = self.driver, self.outcome
        assert driver is not None and outcome is not None
        if position in driver.content_positions:
            return FailureKind.CONTENT
        if position in driver.refused_positions:
            return FailureKind.LOCAL
        return outcome.failure or FailureKind.LOST


def _auth_deferral(refused: Reply | None) -> Reply | None:
    """A permanent refusal of AUTH as a deferral (4.7.x), the server's reply kept in the
    text: a rotated credential must not bounce a whole queue (Postfix's
    smtp_sasl_auth_soft_bounce). Not local: no other address of the relay is tried."""
    if refused is None or not refused.is_permanent:
        return refused
    found = refused.enhanced or EnhancedStatus.parse(refused.lines[0] if refused.lines else "")
    enhanced = f"4.7.{found.detail}" if found is not None and found.subject == 7 else "4.7.0"
    text = f"{enhanced} AUTH refused, deferred (fix the credentials): {refused}"
    return Reply(454, (text,), EnhancedStatus.parse(enhanced))


def _todo(messages: dict[int, Message], found: Found) -> dict[int, Message]:
    """The messages (with only their recipients) that still need a host."""
    if not found:  # before any session decided anything: every message as it is
        return dict(messages)
    return {
        i: m for i, message in messages.items()
        if (m := _undecided(message, found.get(i))) is not None
    }  # fmt: skip


def _undecided(message: Message, reports: dict[str, RecipientReport] | None) -> Message | None:
    """The message with only the recipients that still need a host, or None."""
    if not reports:
        return message  # before its first session, as every message is
    keep = tuple(
        r
        for r in message.envelope.recipients
        if (report := reports.get(str(r.address))) is None or _retry_elsewhere(report)
    )
    if not keep:
        return None
    if len(keep) == len(message.envelope.recipients):
        return message
    return Message(replace(message.envelope, recipients=keep), message.content)


def deliver(
    reactor: IReactorTCP,
    messages: Sequence[Message],
    options: DeliveryOptions,
    *,
    dns: tuple[str, int] | None = None,
) -> Deferred[list[MessageReport]]:
    """Deliver ``messages``, asking the DNS server ``dns`` (host, port) or the system's.

    Fires with a :class:`MessageReport` per message; ``await`` it from ``async def`` code.
    """
    return Deliverer(reactor, DNSRouter.asking(dns, reactor), options).deliver(messages)


#: How a session ends when the destination did not hold it up, rather than its replies.
_SESSION_FAILURES = frozenset(
    {FailureKind.CONNECT, FailureKind.CLOSING, FailureKind.TIMEOUT, FailureKind.LOST}
)


def _feedback(result: Reports) -> tuple[int, bool]:
    """A session's messages delivered whole, and whether the destination failed it."""
    delivered = 0
    failed = False
    for reports in result.values():
        if reports and all(r.status is Status.DELIVERED for r in reports):
            delivered += 1
        failed = failed or any(r.failure in _SESSION_FAILURES for r in reports)
    return delivered, failed
