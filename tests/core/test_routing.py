"""Routing decisions (pure) and lookups (on a fake resolver)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mxsend.routing import RouteError, interleave, order_mx
from mxsend.testing import FakeResolver
from mxsend.twisted import DNSRouter


def run(coroutine: object) -> object:
    deferred = Deferred.fromCoroutine(coroutine)  # type: ignore[arg-type]
    results: list[object] = []
    deferred.addBoth(results.append)
    assert results, "the fake resolver answers synchronously"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()  # type: ignore[union-attr]
    return results[0]


def test_order_by_preference_and_dedupe() -> None:
    records = [(20, "b.example."), (10, "A.example"), (30, "a.example"), (5, "c.example")]
    assert order_mx(records, random.Random(1)) == [
        (5, "c.example"),
        (10, "a.example"),
        (20, "b.example"),
    ]


def test_equal_preferences_are_shuffled() -> None:
    rng = random.Random(7)
    firsts = Counter(
        order_mx([(10, "a.x"), (10, "b.x"), (10, "c.x")], rng)[0][1] for _ in range(300)
    )
    assert set(firsts) == {"a.x", "b.x", "c.x"} and min(firsts.values()) > 50


def test_null_mx_is_permanent_5_1_10() -> None:
    with pytest.raises(RouteError) as caught:
        order_mx([(0, ".")])
    assert caught.value.reply.code == 556 and str(caught.value.reply.enhanced) == "5.1.10"
    assert order_mx([(0, "."), (10, "mx.example")]) == [(10, "mx.example")]


def test_interleave_families() -> None:
    assert interleave(["::1", "::2"], ["1.1.1.1"]) == ("::1", "1.1.1.1", "::2")


def router(resolver: FakeResolver, clock: Clock | None = None) -> DNSRouter:
    return DNSRouter(resolver, clock or Clock(), random.Random(3))


def test_mx_hosts_with_addresses() -> None:
    fake = FakeResolver(
        mx={"example.org": [(10, "mx1.example.org"), (20, "mx2.example.org")]},
        a={"mx1.example.org": ["192.0.2.1"], "mx2.example.org": ["192.0.2.2"]},
        aaaa={"mx1.example.org": ["2001:db8::1"]},
    )
    hosts = run(router(fake).mx_hosts("example.org"))
    assert [(h.name, h.preference, h.addresses) for h in hosts] == [  # type: ignore[attr-defined]
        ("mx1.example.org", 10, ("2001:db8::1", "192.0.2.1")),
        ("mx2.example.org", 20, ("192.0.2.2",)),
    ]
    assert ("example.org", "ANY") not in fake.queries


def test_implicit_mx_from_a_records_never_any() -> None:
    fake = FakeResolver(a={"plain.example": ["192.0.2.9"]})
    [host] = run(router(fake).mx_hosts("plain.example"))  # type: ignore[misc]
    assert host.implicit and host.name == "plain.example" and host.addresses == ("192.0.2.9",)
    assert {kind for _, kind in fake.queries} == {"MX", "A", "AAAA"}


def test_nxdomain_is_permanent_servfail_transient() -> None:
    fake = FakeResolver(nxdomain=frozenset({"gone.example"}), servfail=frozenset({"sick.example"}))
    with pytest.raises(RouteError) as gone:
        run(router(fake).mx_hosts("gone.example"))
    assert gone.value.reply.is_permanent and str(gone.value.reply.enhanced) == "5.1.2"
    with pytest.raises(RouteError) as sick:
        run(router(fake).mx_hosts("sick.example"))
    assert sick.value.reply.is_transient


def test_domain_without_any_address_is_permanent() -> None:
    with pytest.raises(RouteError) as caught:
        run(router(FakeResolver()).mx_hosts("empty.example"))
    assert caught.value.reply.is_permanent


def test_mx_host_without_address_is_skipped_all_missing_transient() -> None:
    fake = FakeResolver(
        mx={"d.example": [(10, "ghost.d.example"), (20, "real.d.example")]},
        a={"real.d.example": ["192.0.2.5"]},
        nxdomain=frozenset({"ghost.d.example"}),
    )
    assert [h.name for h in run(router(fake).mx_hosts("d.example"))] == ["real.d.example"]  # type: ignore[attr-defined]
    only_ghost = FakeResolver(
        mx={"d.example": [(10, "ghost.d.example")]}, nxdomain=frozenset({"ghost.d.example"})
    )
    with pytest.raises(RouteError) as caught:
        run(router(only_ghost).mx_hosts("d.example"))
    assert caught.value.reply.is_transient


def test_cname_chain_followed_and_bounded() -> None:
    fake = FakeResolver(
        cname={"alias.example": "real.example"},
        mx={"real.example": [(10, "mx.real.example")]},
        a={"mx.real.example": ["192.0.2.7"]},
    )
    assert [h.name for h in run(router(fake).mx_hosts("alias.example"))] == ["mx.real.example"]  # type: ignore[attr-defined]
    loop = FakeResolver(cname={f"n{i}.example": f"n{i + 1}.example" for i in range(20)})
    with pytest.raises(RouteError) as caught:
        run(router(loop).mx_hosts("n0.example"))
    assert caught.value.reply.is_permanent and "CNAME" in caught.value.reply.text


def test_answers_are_cached_for_their_ttl() -> None:
    fake = FakeResolver(
        mx={"c.example": [(10, "mx.c.example")]}, a={"mx.c.example": ["192.0.2.3"]}, ttl=60
    )
    clock = Clock()
    routes = router(fake, clock)
    run(routes.mx_hosts("c.example"))
    count = len(fake.queries)
    run(routes.mx_hosts("c.example"))
    assert len(fake.queries) == count
    clock.advance(61)
    run(routes.mx_hosts("c.example"))
    assert len(fake.queries) == 2 * count


def test_address_literal_and_smarthost_addresses() -> None:
    routes = router(FakeResolver(a={"relay.example": ["192.0.2.8"]}))
    assert run(routes.addresses("192.0.2.1")) == ("192.0.2.1",)
    assert run(routes.addresses("relay.example")) == ("192.0.2.8",)
    with pytest.raises(RouteError):
        run(routes.addresses("nothing.example"))
