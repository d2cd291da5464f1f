"""Finding a domain's mail exchangers (RFC 5321 5.1, RFC 7505) with dnspython."""

from __future__ import annotations

import ipaddress
import random
from typing import TYPE_CHECKING

import anyio
import attrs
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import sniffio

from smtp_message import Mailbox, Reply

from ._errors import DNSError, NoRouteError, NoSuchDomain, NullMXError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from dns._asyncbackend import Backend

__all__ = ["MXHost", "MXResolver", "Route", "order_mx"]

#: How long one lookup may take in all, retries included (dnspython's
#: ``lifetime``).  RFC 5321 gives no figure; a DNS timeout is transient.
DNS_LIFETIME = 10.0


@attrs.frozen
class MXHost:
    """One mail exchanger: its name, preference and addresses, in order."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@attrs.frozen
class Route:
    """Where mail for ``domain`` goes: exchangers in the order to try them.

    ``implicit`` is true when the domain has no MX records and its own
    address records are used (RFC 5321 5.1, the "implicit MX").
    ``incomplete`` is true when the address lookup of some exchanger failed
    temporarily (or ran out of time), so ``hosts`` may lack one that would
    have taken the mail: a refusal from the others is then not final.
    """

    domain: str
    hosts: tuple[MXHost, ...]
    implicit: bool = False
    incomplete: bool = False


def order_mx(
    records: Iterable[tuple[int, str]], rng: random.Random | None = None
) -> list[tuple[int, str]]:
    """Sort MX records by preference, equal preferences in random order.

    RFC 5321 5.1: "the sender-SMTP MUST randomize them [MX records with the
    same preference] to spread the load across multiple mail exchangers".
    A shuffle followed by a stable sort does exactly that.
    """
    shuffled = list(records)
    (rng or random).shuffle(shuffled)
    return sorted(shuffled, key=lambda record: record[0])


def _backend() -> Backend:
    # dnspython caches the first event loop library it sees as its default
    # backend, so a process that runs asyncio and then trio (a test suite)
    # would use the wrong one: name the running library on every call.
    return dns.asyncbackend.get_backend(sniffio.current_async_library())


def _literal(domain: str) -> str | None:
    """The address of an address literal (``[192.0.2.1]``, ``[IPv6:::1]``)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    try:
        # RFC 5321 4.1.3, as smtp_message checks every address's domain.
        Mailbox("postmaster", domain)
        inner = domain[1:-1]
        if inner[:5].lower() == "ipv6:":
            return str(ipaddress.IPv6Address(inner[5:]))
        if ":" in inner:
            raise ValueError("a General-address-literal names no IP address")
        # Snum may have leading zeros, which ipaddress refuses.
        return str(ipaddress.IPv4Address(".".join(str(int(n)) for n in inner.split("."))))
    except ValueError:
        raise NoSuchDomain(f"bad address literal {domain}") from None


#: Where no mail exchanger of another domain can be: this host (a mail
#: loop, or a local service reached from outside), "this network", and
#: link-local addresses (a cloud's metadata service).  RFC 5321 5.1 has the
#: client skip an exchanger that is itself; Exim's default
#: ``ignore_target_hosts`` skips the first two.
_LOCAL = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("::/128"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("fe80::/10"),
)


def _is_local(address: str) -> bool:
    """Whether ``address`` is this host, unspecified, or link-local."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _LOCAL if net.version == ip.version)


def _loops(domain: str) -> NoRouteError:
    text = f"every mail exchanger of {domain} is a local address (mail loop)"
    # RFC 3463 X.4.6 "Routing loop detected", as Postfix reports it.
    return NoRouteError(text, reply=Reply(554, "5.4.6", text))


@attrs.define(eq=False)
class MXResolver:
    """Looks up MX, A and AAAA records with dnspython's async resolver.

    Works under asyncio and trio (dnspython's trio backend needs trio 0.34
    or newer).  Point it at a nameserver of your own with :meth:`at`; the
    default, :meth:`system`, reads ``/etc/resolv.conf``.  ``families``
    lists the address records wanted, in the order their addresses are
    tried.  Exchangers at local addresses (loopback, ``0.0.0.0/8``,
    link-local) are skipped, for address literals
    too, unless ``local_targets`` is true (a test on one machine); if
    nothing else is left, the route fails with ``554 5.4.6``.
    """

    resolver: dns.asyncresolver.Resolver
    rng: random.Random = attrs.field(factory=random.Random)
    families: tuple[str, ...] = ("A", "AAAA")
    #: How long the address lookups of one domain's exchangers may take in
    #: all (default: three lookups' ``lifetime``).  A domain may publish
    #: many MX names that do not answer: they must not hold a sender for
    #: minutes.  When it runs out, the addresses found so far are used.
    hosts_lifetime: float | None = None
    local_targets: bool = False

    @classmethod
    def system(cls) -> MXResolver:
        """The system's resolver configuration."""
        resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = DNS_LIFETIME
        return cls(resolver)

    @classmethod
    def at(
        cls,
        nameservers: str | Sequence[str],
        port: int = 53,
        *,
        lifetime: float = DNS_LIFETIME,
        local_targets: bool = False,
    ) -> MXResolver:
        """A resolver that asks ``nameservers`` (IP addresses) on ``port``."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameservers] if isinstance(nameservers, str) else list(nameservers)
        resolver.port = port
        resolver.lifetime = lifetime
        return cls(resolver, local_targets=local_targets)

    async def resolve(self, domain: str, *, enough: int | None = None) -> Route:
        """The route to ``domain``: its exchangers, sorted, with addresses.

        With ``enough``, exchangers are looked up in order only until that
        many addresses are known (a client tries a few at most).

        Raises :class:`~smtp_client.NoSuchDomain` (NXDOMAIN, permanent),
        :class:`~smtp_client.NullMXError` (RFC 7505, permanent),
        :class:`~smtp_client.NoRouteError` (no exchanger has an address,
        permanent) or :class:`~smtp_client.DNSError` (a temporary failure).
        """
        literal = _literal(domain)
        if literal is not None:
            if not self.local_targets and _is_local(literal):
                raise _loops(domain)
            return Route(domain, (MXHost(literal, 0, (literal,)),), implicit=True)
        try:
            name = dns.name.from_text(domain)
        except (dns.exception.DNSException, ValueError) as exc:
            raise NoSuchDomain(f"bad domain name {domain!r}: {exc}") from None
        try:
            answer = await self.resolver.resolve(name, "MX", search=False, backend=_backend())
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(f"domain {domain} does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            # RFC 5321 5.1: "If an empty list of MXs is returned, the address
            # is treated as if it was associated with an implicit MX RR, with
            # a preference of 0, pointing to that host."
            found, transient = await self._addresses(name)
            addresses = self._remote(found)
            if addresses:
                host = MXHost(domain.rstrip("."), 0, addresses)
                return Route(domain, (host,), implicit=True)
            if transient:
                raise DNSError(f"address lookup for {domain} failed") from None
            if found:
                raise _loops(domain) from None
            raise NoRouteError(f"{domain} has no MX and no address records") from None
        except dns.exception.DNSException as exc:
            raise DNSError(f"MX lookup for {domain} failed: {exc}") from None
        records: list[tuple[int, dns.name.Name]] = [
            (rr.preference, rr.exchange) for rr in answer if rr.rdtype == dns.rdatatype.MX
        ]
        usable = [(p, x) for p, x in records if x != dns.name.root]
        if records and not usable:
            # RFC 7505 3: "MX 0 ." says the domain accepts no mail; 4.1:
            # the client must not try to deliver.
            raise NullMXError(f"{domain} publishes a null MX (RFC 7505)")
        ordered = order_mx([(p, x.to_text(omit_final_dot=True)) for p, x in usable], self.rng)
        hosts: list[MXHost] = []
        transient = False
        local = False
        known = 0
        budget = self.hosts_lifetime
        if budget is None:
            budget = 3 * (self.resolver.lifetime or DNS_LIFETIME)
        with anyio.move_on_after(budget) as scope:
            for preference, exchange in ordered:
                if enough is not None and known >= enough:
                    break
                every, failed = await self._addresses(dns.name.from_text(exchange))
                transient |= failed
                addresses = self._remote(every)
                local |= len(addresses) < len(every)
                if addresses:
                    hosts.append(MXHost(exchange, preference, addresses))
                    known += len(addresses)
        transient |= scope.cancelled_caught
        if hosts:
            return Route(domain, tuple(hosts), incomplete=transient)
        # RFC 5321 5.1: "If MX records are present, but none of them are
        # usable ... this situation MUST be reported as an error."
        if transient:
            raise DNSError(f"address lookups for the MX hosts of {domain} failed")
        if local:
            raise _loops(domain)
        raise NoRouteError(f"no MX host of {domain} has an address")

    def _remote(self, addresses: tuple[str, ...]) -> tuple[str, ...]:
        if self.local_targets:
            return addresses
        return tuple(a for a in addresses if not _is_local(a))

    async def addresses(self, name: str) -> tuple[str, ...]:
        """The addresses of host ``name`` (A, then AAAA); empty if none.

        Raises :class:`~smtp_client.DNSError` if a lookup failed
        temporarily and no address was found.
        """
        literal = _literal(name) if name.startswith("[") else None
        if literal is not None:
            return (literal,)
        found, transient = await self._addresses(dns.name.from_text(name))
        if not found and transient:
            raise DNSError(f"address lookup for {name} failed")
        return found

    async def _addresses(self, name: dns.name.Name) -> tuple[tuple[str, ...], bool]:
        """Addresses of ``name`` and whether some lookup failed temporarily."""
        found: list[str] = []
        transient = False
        for rdtype in self.families:
            try:
                answer = await self.resolver.resolve(name, rdtype, search=False, backend=_backend())
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException:
                transient = True
                continue
            found.extend(
                rr.address for rr in answer if rr.rdtype == dns.rdatatype.from_text(rdtype)
            )
        return tuple(dict.fromkeys(found)), transient
