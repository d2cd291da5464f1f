"""MX resolution (RFC 5321 5.1, RFC 7505) against real DNS servers on loopback,
and delivery to a domain's exchangers with failover.

Two DNS servers: dnsmasq (a real program) for MX ordering, implicit MX,
null MX and NXDOMAIN, and the testkit's dnspython server for what dnsmasq
cannot do (SERVFAIL, no answer at all).  Exchangers are scripted servers
on 127.0.0.2 and 127.0.0.3 (all of 127/8 is local on Linux).
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_client import (
    Client,
    DNSError,
    Envelope,
    MXDomain,
    MXResolver,
    NoRouteError,
    NoSuchDomain,
    NullMXError,
    Status,
    Timeouts,
    TLSPolicy,
    order_mx,
)

from .conftest import Dialogue, scripted_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from smtp_testkit.dns import Dnsmasq, DNSServer

pytestmark = pytest.mark.anyio

BODY = b"Subject: mx\r\n\r\nhi\r\n"
FAST = Timeouts(
    connect=5,
    greeting=5,
    command=5,
    mail=5,
    rcpt=5,
    data_init=5,
    data_block=5,
    data_end=5,
)


@pytest.fixture
def dnsmasq(dnsmasq_factory: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq_factory(
        mx=[
            ("two.test", "mx2.two.test", 20),
            ("two.test", "mx1.two.test", 10),
            ("null.test", ".", 0),
        ],
        hosts=[
            ("mx1.two.test", "127.0.0.2"),
            ("mx2.two.test", "127.0.0.3"),
            ("amx.test", "127.0.0.4"),
        ],
    )


# -- Against dnsmasq -----------------------------------------------------------


async def test_resolve_sorts_by_preference(dnsmasq: Dnsmasq) -> None:
    """RFC 5321 5.1: lower preference first, each with its addresses."""
    route = await MXResolver.at(dnsmasq.host, dnsmasq.port, local_targets=True).resolve("two.test")
    assert [(h.name, h.preference, h.addresses) for h in route.hosts] == [
        ("mx1.two.test", 10, ("127.0.0.2",)),
        ("mx2.two.test", 20, ("127.0.0.3",)),
    ]
    assert not route.implicit


async def test_resolve_implicit_mx(dnsmasq: Dnsmasq) -> None:
    """RFC 5321 5.1: no MX records: the domain's own address, preference 0."""
    route = await MXResolver.at(dnsmasq.host, dnsmasq.port, local_targets=True).resolve("amx.test")
    assert route.implicit
    assert [(h.name, h.preference, h.addresses) for h in route.hosts] == [
        ("amx.test", 0, ("127.0.0.4",))
    ]


async def test_resolve_null_mx_is_permanent(dnsmasq: Dnsmasq) -> None:
    """RFC 7505 3 and 4.1: "MX 0 ." means no mail: 556 5.1.10, permanent."""
    with pytest.raises(NullMXError) as info:
        await MXResolver.at(dnsmasq.host, dnsmasq.port, local_targets=True).resolve("null.test")
    assert info.value.permanent
    assert (info.value.reply.code, info.value.reply.enhanced) == (556, "5.1.10")


async def test_resolve_nxdomain_is_permanent(dnsmasq: Dnsmasq) -> None:
    """RFC 5321 5.1 / RFC 3463 X.1.2: a domain that does not exist."""
    with pytest.raises(NoSuchDomain) as info:
        await MXResolver.at(dnsmasq.host, dnsmasq.port, local_targets=True).resolve("nosuch.test")
    assert info.value.permanent
    assert info.value.reply.enhanced == "5.1.2"
    assert "nosuch.test" in dnsmasq.log()


# -- Against the scriptable dnspython server -----------------------------------


async def test_resolve_servfail_is_transient(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: a temporary DNS failure must not bounce mail: 4.4.3."""
    dns_server.servfail("broken.test")
    with pytest.raises(DNSError) as info:
        await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
            "broken.test"
        )
    assert not info.value.permanent
    assert info.value.reply.enhanced == "4.4.3"


async def test_resolve_timeout_is_transient(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: no answer at all is a temporary failure, too."""
    dns_server.drop("silent.test")
    resolver = MXResolver.at(dns_server.host, dns_server.port, local_targets=True, lifetime=0.5)
    with pytest.raises(DNSError):
        await resolver.resolve("silent.test")


async def test_resolve_skips_exchangers_without_address(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: an MX name that does not resolve is skipped."""
    dns_server.add("skip.test", "MX", "10 gone.skip.test.", "20 mx.skip.test.")
    dns_server.add("mx.skip.test", "A", "127.0.0.3")
    route = await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
        "skip.test"
    )
    assert [h.name for h in route.hosts] == ["mx.skip.test"]


async def test_resolve_no_usable_exchanger_is_permanent(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: "MX records are present, but none of them are usable"."""
    dns_server.add("dead.test", "MX", "10 gone.dead.test.")
    with pytest.raises(NoRouteError) as info:
        await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
            "dead.test"
        )
    assert info.value.permanent


async def test_resolve_exchanger_lookup_failing_is_transient(
    dns_server: DNSServer,
) -> None:
    """RFC 5321 5.1: an MX host whose address lookup fails temporarily."""
    dns_server.add("flaky.test", "MX", "10 mx.flaky.test.")
    dns_server.servfail("mx.flaky.test")
    with pytest.raises(DNSError):
        await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
            "flaky.test"
        )


async def test_resolve_marks_a_route_missing_an_exchanger_incomplete(
    dns_server: DNSServer,
) -> None:
    """RFC 5321 5.1: the preferred MX host's address lookup fails
    temporarily; the route has the others, and says it is incomplete."""
    dns_server.add("part.test", "MX", "10 mx1.part.test.", "20 mx2.part.test.")
    dns_server.servfail("mx1.part.test")
    dns_server.add("mx2.part.test", "A", "127.0.0.3")
    route = await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
        "part.test"
    )
    assert [h.name for h in route.hosts] == ["mx2.part.test"]
    assert route.incomplete
    dns_server.add("whole.test", "MX", "10 mx2.part.test.")
    whole = await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
        "whole.test"
    )
    assert not whole.incomplete


async def test_resolve_stops_at_enough_addresses_and_within_its_budget(
    dns_server: DNSServer,
) -> None:
    """RFC 5321 5.1 lets a domain publish any number of MX names.  With
    ``enough``, the lookups stop once that many addresses are known; and
    all of them together are bounded by ``hosts_lifetime``, so twenty MX
    names that never answer cannot hold a sender for minutes."""
    names = [f"{10 + i} mx{i}.many.test." for i in range(20)]
    dns_server.add("many.test", "MX", "5 good.many.test.", *names)
    dns_server.add("good.many.test", "A", "127.0.0.3")
    for i in range(20):
        dns_server.drop(f"mx{i}.many.test")
    resolver = MXResolver.at(dns_server.host, dns_server.port, local_targets=True, lifetime=0.5)
    route = await resolver.resolve("many.test", enough=1)
    assert [h.name for h in route.hosts] == ["good.many.test"]
    assert not route.incomplete
    # The MX, then the first host's A and AAAA: none of the twenty.
    assert dns_server.queries == [
        ("many.test.", "MX"),
        ("good.many.test.", "A"),
        ("good.many.test.", "AAAA"),
    ]
    resolver.hosts_lifetime = 1.5
    started = anyio.current_time()
    route = await resolver.resolve("many.test")
    assert anyio.current_time() - started < 5  # 40 lookups of 0.5 s unbounded: 20 s
    assert [h.name for h in route.hosts] == ["good.many.test"]
    assert route.incomplete


async def test_resolve_no_mx_no_address_is_permanent(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: no MX and no A/AAAA: the domain cannot receive mail."""
    dns_server.add("textonly.test", "TXT", '"v=spf1 -all"')
    with pytest.raises(NoRouteError):
        await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
            "textonly.test"
        )


async def test_resolve_ipv6_addresses(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: A and AAAA records both give addresses, A first."""
    dns_server.add("six.test", "MX", "10 mx.six.test.")
    dns_server.add("mx.six.test", "AAAA", "::1")
    dns_server.add("mx.six.test", "A", "127.0.0.5")
    route = await MXResolver.at(dns_server.host, dns_server.port, local_targets=True).resolve(
        "six.test"
    )
    assert route.hosts[0].addresses == ("127.0.0.5", "::1")


async def test_resolve_address_literal_needs_no_dns(dns_server: DNSServer) -> None:
    """RFC 5321 4.1.3: ``[127.0.0.2]`` is an address, not a name to look up."""
    resolver = MXResolver.at(dns_server.host, dns_server.port, local_targets=True)
    route = await resolver.resolve("[127.0.0.2]")
    assert route.hosts[0].addresses == ("127.0.0.2",)
    route = await resolver.resolve("[IPv6:::1]")
    assert route.hosts[0].addresses == ("::1",)
    assert dns_server.queries == []


@pytest.mark.parametrize(
    "literal", ["[::1]", "[IPv6:127.0.0.1]", "[IPv6:fe80::1%lo]", "[1.2.3]", "[x:1.2.3.4]"]
)
async def test_resolve_malformed_address_literals_are_refused(
    dns_server: DNSServer, literal: str
) -> None:
    """RFC 5321 4.1.3: an IPv6 literal needs its "IPv6:" tag, an IPv4 one
    has none, and neither has a zone index: anything else is no address."""
    resolver = MXResolver.at(dns_server.host, dns_server.port, local_targets=True)
    with pytest.raises(NoSuchDomain, match="bad address literal"):
        await resolver.resolve(literal)
    assert dns_server.queries == []


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.8.9.10", "0.0.0.0", "169.254.169.254", "::1", "::ffff:127.0.0.1"]
)
async def test_resolve_skips_exchangers_at_local_addresses(
    dns_server: DNSServer, address: str
) -> None:
    """RFC 5321 5.1: an exchanger that is this host would loop the mail (or
    hand it to a local service as if from outside); like Exim's default
    ``ignore_target_hosts``, such addresses are skipped, and a domain whose
    exchangers are all local fails with 554 5.4.6 (routing loop, RFC 3463),
    for an address literal too.  local_targets=True allows them (tests)."""
    kind = "AAAA" if ":" in address else "A"
    dns_server.add("loop.test", "MX", "10 local.loop.test.", "20 mx.loop.test.")
    dns_server.add("local.loop.test", kind, address)
    dns_server.add("mx.loop.test", "A", "192.0.2.25")
    dns_server.add("only.test", "MX", "10 local.loop.test.")
    dns_server.add("implicit.test", kind, address)
    resolver = MXResolver.at(dns_server.host, dns_server.port)
    route = await resolver.resolve("loop.test")
    assert [h.name for h in route.hosts] == ["mx.loop.test"]
    literal = f"[IPv6:{address}]" if ":" in address else f"[{address}]"
    for domain in ("only.test", "implicit.test", literal):
        with pytest.raises(NoRouteError) as info:
            await resolver.resolve(domain)
        assert (info.value.permanent, info.value.reply.enhanced) == (True, "5.4.6")
    allowed = MXResolver.at(dns_server.host, dns_server.port, local_targets=True)
    route = await allowed.resolve("only.test")
    assert route.hosts[0].addresses in ((address,), (str(ipaddress.ip_address(address)),))


async def test_resolve_randomises_equal_preferences(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: equal preferences "MUST" be tried in random order."""
    dns_server.add("even.test", "MX", "10 a.even.test.", "10 b.even.test.", "5 first.even.test.")
    for name, address in [
        ("a", "127.0.0.2"),
        ("b", "127.0.0.3"),
        ("first", "127.0.0.4"),
    ]:
        dns_server.add(f"{name}.even.test", "A", address)
    resolver = MXResolver.at(dns_server.host, dns_server.port, local_targets=True)
    resolver.rng = random.Random(1)
    orders: Counter[tuple[str, ...]] = Counter()
    for _ in range(30):
        route = await resolver.resolve("even.test")
        orders[tuple(h.name for h in route.hosts)] += 1
    assert set(orders) == {
        ("first.even.test", "a.even.test", "b.even.test"),
        ("first.even.test", "b.even.test", "a.even.test"),
    }


@given(st.lists(st.tuples(st.integers(0, 65535), st.text("abc", min_size=1, max_size=3))))
def test_order_mx_sorts_and_keeps_every_record(
    records: list[tuple[int, str]],
) -> None:
    """RFC 5321 5.1: a permutation of the records, preferences ascending."""
    ordered = order_mx(records, random.Random(0))
    assert sorted(ordered) == sorted(records)
    assert [p for p, _ in ordered] == sorted(p for p, _ in records)


# -- Delivery by MX --------------------------------------------------------------


def _route(dns_server: DNSServer, domain: str) -> None:
    dns_server.add(domain, "MX", f"10 mx1.{domain}.", f"20 mx2.{domain}.")
    dns_server.add(f"mx1.{domain}", "A", "127.0.0.2")
    dns_server.add(f"mx2.{domain}", "A", "127.0.0.3")


async def test_mx_delivery_uses_the_preferred_exchanger(dns_server: DNSServer) -> None:
    """RFC 5321 5.1: the lowest preference first; the domain's recipients together."""
    _route(dns_server, "pref.test")
    dialogue1, dialogue2 = Dialogue(), Dialogue()
    async with (
        scripted_server(dialogue1, host="127.0.0.2") as mx1,
        scripted_server(dialogue2, host="127.0.0.3", port=mx1.port),
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("pref.test", port=mx1.port),
            Envelope.build("s@client.test", ["a@pref.test", "b@pref.test"]),
            BODY,
        )
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 2
    assert result.host == f"mx1.pref.test[127.0.0.2]:{mx1.port}"
    assert len(dialogue1.bodies) == 1
    assert dialogue2.bodies == []


async def test_mx_delivery_fails_over_after_refused_connection(
    dns_server: DNSServer,
) -> None:
    """RFC 5321 5.1: connection refused by the first exchanger: the next."""
    _route(dns_server, "over.test")
    dialogue = Dialogue()
    async with (
        scripted_server(dialogue, host="127.0.0.3") as mx2,
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("over.test", port=mx2.port),  # nothing on 127.0.0.2
            Envelope.build("s@client.test", ["a@over.test"]),
            BODY,
        )
    assert result.recipients[0].status is Status.DELIVERED
    assert result.host == f"mx2.over.test[127.0.0.3]:{mx2.port}"


@pytest.mark.parametrize("greeting", [b"421 4.3.2 busy\r\n", b"554 5.3.2 no\r\n"])
async def test_mx_delivery_fails_over_after_refusing_greeting(
    dns_server: DNSServer, greeting: bytes
) -> None:
    """RFC 5321 5.1 and 3.1: a 4xx (or 5xx) greeting: try the next exchanger."""
    _route(dns_server, "greet.test")
    async with (
        scripted_server(Dialogue(greeting=greeting), host="127.0.0.2") as mx1,
        scripted_server(Dialogue(), host="127.0.0.3", port=mx1.port),
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("greet.test", port=mx1.port),
            Envelope.build("s@client.test", ["a@greet.test"]),
            BODY,
        )
    assert result.recipients[0].status is Status.DELIVERED
    assert "mx2.greet.test" in (result.host or "")


async def test_mx_all_exchangers_down_is_transient(dns_server: DNSServer) -> None:
    """RFC 5321 5.1 / 4.5.4.1: nobody answers: the queue tries again later."""
    _route(dns_server, "down.test")
    async with scripted_server(Dialogue()) as unused:
        port = unused.port  # a port with nothing on 127.0.0.2 or .3
    async with Client(
        helo="client.test",
        timeouts=FAST,
        resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
    ) as client:
        result = await client.send(
            MXDomain("down.test", port=port),
            Envelope.build("s@client.test", ["a@down.test"]),
            BODY,
        )
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.4.1"
    assert "mx2.down.test" in (r.host or "")


async def test_mx_every_exchanger_refusing_permanently_is_permanent(
    dns_server: DNSServer,
) -> None:
    """RFC 5321 3.1: 554 from every exchanger: the domain will not take it."""
    _route(dns_server, "no.test")
    refuse = Dialogue(greeting=b"554 5.7.1 not here\r\n")
    async with (
        scripted_server(refuse, host="127.0.0.2") as mx1,
        scripted_server(refuse, host="127.0.0.3", port=mx1.port),
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("no.test", port=mx1.port),
            Envelope.build("s@client.test", ["a@no.test"]),
            BODY,
        )
    assert result.recipients[0].status is Status.PERMANENT
    assert result.recipients[0].reply.code == 554


async def test_mx_refusal_by_the_backup_when_the_preferred_did_not_resolve_is_transient(
    dns_server: DNSServer,
) -> None:
    """RFC 5321 5.1 and 4.5.4.1: the preferred exchanger's address lookup
    failed temporarily, and the backup greets 554.  The preferred one was
    never tried and may take the mail: transient (4.4.3), not a bounce."""
    dns_server.add("backup.test", "MX", "10 mx1.backup.test.", "20 mx2.backup.test.")
    dns_server.servfail("mx1.backup.test")
    dns_server.add("mx2.backup.test", "A", "127.0.0.3")
    refuse = Dialogue(greeting=b"554 5.7.1 not for this domain now\r\n")
    async with (
        scripted_server(refuse, host="127.0.0.3") as mx2,
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("backup.test", port=mx2.port),
            Envelope.build("s@client.test", ["a@backup.test"]),
            BODY,
        )
    (r,) = result.recipients
    assert (r.status, r.reply.enhanced) == (Status.TRANSIENT, "4.4.3")
    assert "554 5.7.1 not for this domain now" in r.reply.text
    assert len(mx2.peers) == 1  # the backup was tried


@pytest.mark.parametrize(
    ("domain", "setup", "status", "enhanced"),
    [
        ("nullmx.test", lambda s: s.add("nullmx.test", "MX", "0 ."), Status.PERMANENT, "5.1.10"),
        ("nosuch.test", lambda s: None, Status.PERMANENT, "5.1.2"),
        ("fail.test", lambda s: s.servfail("fail.test"), Status.TRANSIENT, "4.4.3"),
        ("silent.test", lambda s: s.drop("silent.test"), Status.TRANSIENT, "4.4.3"),
    ],
    ids=["null-mx", "nxdomain", "servfail", "timeout"],
)
async def test_mx_dns_failures_become_results(
    dns_server: DNSServer,
    domain: str,
    setup: Callable[[DNSServer], None],
    status: Status,
    enhanced: str,
) -> None:
    """RFC 7505 and RFC 5321 5.1: DNS outcomes reach every recipient's result:
    null MX and NXDOMAIN permanent, SERVFAIL and no answer at all transient."""
    setup(dns_server)
    async with Client(
        helo="client.test",
        timeouts=FAST,
        resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True, lifetime=0.5),
    ) as client:
        result = await client.send(
            MXDomain(domain),
            Envelope.build("s@client.test", [f"a@{domain}", f"b@{domain}"]),
            BODY,
        )
    assert [r.status for r in result.recipients] == [status] * 2
    assert {r.reply.enhanced for r in result.recipients} == {enhanced}
    assert result.host is None


@pytest.mark.parametrize(
    ("family", "address"), [("A", "127.0.0.6"), ("AAAA", "::1")], ids=["a", "aaaa"]
)
async def test_mx_delivery_to_the_implicit_mx(
    dns_server: DNSServer, family: str, address: str
) -> None:
    """RFC 5321 5.1: no MX records: the mail goes to the domain's own A or
    AAAA address (the implicit MX, preference 0)."""
    dns_server.add("bare.test", family, address)
    dialogue = Dialogue()
    async with (
        scripted_server(dialogue, host=address) as server,
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("bare.test", port=server.port),
            Envelope.build("s@client.test", ["a@bare.test"]),
            BODY,
        )
    assert result.recipients[0].status is Status.DELIVERED
    assert result.host == f"bare.test[{address}]:{server.port}"
    assert dialogue.bodies == [BODY]
    assert ("bare.test.", "MX") in dns_server.queries


async def test_mx_tls_policy_resolver_is_asked_per_exchanger(
    dns_server: DNSServer,
) -> None:
    """RFC 8461 4 / RFC 7672 2: the MTA-STS/DANE hook sees (domain, MX host)."""
    _route(dns_server, "sts.test")
    asked: list[tuple[str, str]] = []

    async def policy(domain: str, mx_host: str) -> TLSPolicy:
        asked.append((domain, mx_host))
        return TLSPolicy.none()

    async with (
        scripted_server(Dialogue(), host="127.0.0.3") as mx2,
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("sts.test", port=mx2.port, tls=policy),
            Envelope.build("s@client.test", ["a@sts.test"]),
            BODY,
        )
    assert result.recipients[0].status is Status.DELIVERED
    assert asked == [("sts.test", "mx1.sts.test"), ("sts.test", "mx2.sts.test")]


async def test_mx_opportunistic_by_default_uses_starttls(
    dns_server: DNSServer, server_context: object
) -> None:
    """RFC 3207 with RFC 7435: MX relaying encrypts when the server offers it."""
    import ssl

    assert isinstance(server_context, ssl.SSLContext)
    dns_server.add("tls.test", "MX", "10 mx.tls.test.")
    dns_server.add("mx.tls.test", "A", "127.0.0.2")
    dialogue = Dialogue(extensions=["PIPELINING", "STARTTLS"], tls=server_context)
    async with (
        scripted_server(dialogue, host="127.0.0.2") as mx,
        Client(
            helo="client.test",
            timeouts=FAST,
            resolver=MXResolver.at(dns_server.host, dns_server.port, local_targets=True),
        ) as client,
    ):
        result = await client.send(
            MXDomain("tls.test", port=mx.port),
            Envelope.build("s@client.test", ["a@tls.test"]),
            BODY,
        )
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED
