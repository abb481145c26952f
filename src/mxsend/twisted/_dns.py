"""Thin async DNS lookups on an injected twisted.names resolver, with a TTL cache."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.names import dns, error
from twisted.names.client import Resolver

from mxsend.protocol import Reply
from mxsend.routing import MXHost, RouteError, interleave, order_mx

__all__ = ["MAX_CNAME_CHAIN", "DNSRouter", "Lookups", "make_resolver"]

# RFC 1034 allows chains; loops and long chains are a hostile or broken zone.
MAX_CNAME_CHAIN = 8
# Answers without a usable TTL are kept this long; none is kept longer than a day.
_MIN_TTL, _MAX_TTL = 0, 86400
# "No such record" answers are kept a minute (RFC 2308 allows up to the SOA minimum).
_NEGATIVE_TTL = 60
_Records = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


class Lookups(Protocol):
    """What DNSRouter asks of a resolver: three of twisted.names' IResolver lookups, typed as
    they answer (answers, authority, additional), each a list of records."""

    def lookupMailExchange(self, name: str) -> Deferred[_Records]: ...
    def lookupAddress(self, name: str) -> Deferred[_Records]: ...
    def lookupIPV6Address(self, name: str) -> Deferred[_Records]: ...


def make_resolver(server: tuple[str, int] | None, reactor: IReactorTCP) -> Resolver:
    """A resolver asking ``server`` (host, port), or the servers in /etc/resolv.conf."""
    timeouts = (1, 3, 5)
    if server is not None:
        return Resolver(servers=[server], timeout=timeouts, reactor=reactor)  # type: ignore[no-untyped-call]
    return Resolver(resolv="/etc/resolv.conf", timeout=timeouts, reactor=reactor)  # type: ignore[no-untyped-call]


def _transient(text: str) -> RouteError:
    return RouteError(Reply.synthesized(451, "4.4.3", text))


def _permanent(text: str) -> RouteError:
    return RouteError(Reply.synthesized(550, "5.1.2", text))


_T = TypeVar("_T")


async def _settle(jobs: list[Coroutine[Any, Any, _T]]) -> list[_T | RouteError]:
    """Run lookups concurrently; each result is its value or the RouteError it raised."""
    started = [Deferred.fromCoroutine(job) for job in jobs]
    results: list[_T | RouteError] = []
    for deferred in started:
        try:
            results.append(await deferred)
        except RouteError as failure:
            results.append(failure)
    return results


def _payload(record: dns.RRHeader) -> Any:
    # twisted.names types payloads as the generic IEncodableRecord.
    return record.payload


class _NoData(Exception):
    """The name exists but has no records of the asked type."""


class DNSRouter:
    """Finds MX hosts and their addresses. NXDOMAIN is permanent; SERVFAIL, refusals and
    time-outs are transient (RFC 5321 5.1, RFC 2308). Answers are cached for their TTL by
    ``clock``."""

    def __init__(
        self, resolver: Lookups, clock: IReactorTime, rng: random.Random | None = None
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._rng = rng or random.Random()
        self._cache: dict[tuple[str, int], tuple[float, Any]] = {}

    @classmethod
    def asking(cls, server: tuple[str, int] | None, reactor: IReactorTCP) -> DNSRouter:
        """A router asking the DNS server ``server`` (host, port), or the system's, with the
        reactor's clock for its cache."""
        return cls(make_resolver(server, reactor), IReactorTime(reactor))

    async def mx_hosts(self, domain: str) -> list[MXHost]:
        """The domain's MX hosts in order, each with its addresses; raises RouteError."""
        try:
            records = await self._cached(domain, dns.MX, self._mx_records)
        except _NoData:
            records = []
        if not records:
            # RFC 5321 5.1: no MX, so the domain itself is the implicit MX (A/AAAA, never ANY).
            addresses = await self._addresses(domain, nxdomain_is_permanent=True)
            if not addresses:
                raise _permanent(f"{domain} has no MX, A or AAAA record")
            return [MXHost(domain, 0, addresses, implicit=True)]
        ordered = order_mx(records, self._rng)
        found = await _settle([self._addresses(name) for _, name in ordered])
        hosts = [
            MXHost(name, preference, addresses)
            for (preference, name), addresses in zip(ordered, found, strict=True)
            if isinstance(addresses, tuple) and addresses
        ]
        if not hosts:
            errors = [f for f in found if isinstance(f, RouteError)]
            raise errors[0] if errors else _transient(f"no address for any MX host of {domain}")
        return hosts

    async def addresses(self, name: str) -> tuple[str, ...]:
        """A host's addresses, IPv6 and IPv4 interleaved; raises RouteError."""
        found = await self._addresses(name, nxdomain_is_permanent=True)
        if not found:
            raise _permanent(f"{name} has no A or AAAA record")
        return found

    async def _addresses(
        self, name: str, *, nxdomain_is_permanent: bool = False
    ) -> tuple[str, ...]:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            return (name,)  # a literal is its own address
        ipv6, ipv4 = await _settle(
            [
                self._family(name, dns.AAAA, nxdomain_is_permanent),
                self._family(name, dns.A, nxdomain_is_permanent),
            ]
        )
        if isinstance(ipv6, RouteError) and isinstance(ipv4, RouteError | list) and not ipv4:
            raise ipv6
        if isinstance(ipv4, RouteError) and not ipv6:
            raise ipv4
        return interleave(
            ipv6 if isinstance(ipv6, list) else [], ipv4 if isinstance(ipv4, list) else []
        )

    async def _family(self, name: str, kind: int, nxdomain_is_permanent: bool) -> list[str]:
        try:
            return list(await self._cached(name, kind, self._address_records))
        except _NoData:
            return []
        except RouteError as failure:
            if failure.reply.is_permanent and not nxdomain_is_permanent:
                return []  # an MX host that does not exist: skip it
            raise

    async def _cached(
        self, name: str, kind: int, fetch: Callable[[str, int], Awaitable[tuple[int, Any]]]
    ) -> Any:
        key = (name.lower(), kind)
        now = self._clock.seconds()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            value = hit[1]
        else:
            try:
                ttl, value = await fetch(name, kind)
            except _NoData as nodata:
                ttl, value = _NEGATIVE_TTL, nodata
            self._cache[key] = (now + max(_MIN_TTL, min(ttl, _MAX_TTL)), value)
        if isinstance(value, _NoData):
            raise value
        return value

    async def _query(self, name: str, kind: int) -> list[dns.RRHeader]:
        """Answers of type ``kind`` for ``name``, following CNAMEs (bounded)."""
        lookup = {
            dns.MX: self._resolver.lookupMailExchange,
            dns.A: self._resolver.lookupAddress,
            dns.AAAA: self._resolver.lookupIPV6Address,
        }[kind]
        current = name.lower()
        hops = 0
        for _ in range(MAX_CNAME_CHAIN + 1):
            try:
                answers, _authority, _additional = await lookup(current)
            except error.DNSNameError:
                raise _permanent(f"{current}: no such domain (NXDOMAIN)") from None
            except (error.DomainError, error.DNSQueryTimeoutError, DeferredTimeout) as exc:
                raise _transient(f"{current}: DNS lookup failed ({type(exc).__name__})") from None
            except error.DNSServerError:
                raise _transient(f"{current}: DNS server failure (SERVFAIL)") from None
            except error.DNSQueryRefusedError:
                raise _transient(f"{current}: DNS query refused") from None
            # Resolvers usually send the chain with the answer: walk it within the reply.
            chain = [current]
            while True:
                target = next(
                    (
                        str(_payload(a).name).lower()
                        for a in answers
                        if a.type == dns.CNAME and str(a.name).lower() == chain[-1]
                    ),
                    None,
                )
                if target is None:
                    break
                if target in chain:
                    raise _permanent(f"{name}: CNAME loop")
                chain.append(target)
                hops += 1
                if hops > MAX_CNAME_CHAIN:
                    raise _permanent(f"{name}: CNAME chain longer than {MAX_CNAME_CHAIN}")
            wanted = [a for a in answers if a.type == kind and str(a.name).lower() in chain]
            if wanted or chain[-1] == current:
                return wanted
            current = chain[-1]  # the chain's end was not answered: ask for it
        raise _permanent(f"{name}: CNAME chain longer than {MAX_CNAME_CHAIN}")

    async def _mx_records(self, name: str, kind: int) -> tuple[int, list[tuple[int, str]]]:
        answers = await self._query(name, kind)
        if not answers:
            raise _NoData()
        return min(a.ttl for a in answers), [
            (_payload(a).preference, str(_payload(a).name)) for a in answers
        ]

    async def _address_records(self, name: str, kind: int) -> tuple[int, list[str]]:
        answers = await self._query(name, kind)
        if not answers:
            raise _NoData()
        if kind == dns.A:
            found = [_payload(a).dottedQuad() for a in answers]
        else:
            found = [str(ipaddress.IPv6Address(_payload(a).address)) for a in answers]
        return min(a.ttl for a in answers), found
