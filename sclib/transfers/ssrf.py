"""Which addresses a URL source may reach: a guard against server-side request
forgery (SSRF).

A server that copies "any URL a user gives it" must not become a way to reach what
only the server can reach: its own loopback services, the private network it sits
in, or the cloud metadata service that hands out its credentials. An
:class:`AddressPolicy` resolves a URL's host and refuses it, with
:class:`~sclib.errors.BlockedAddress`, if **any** address it resolves to is in a
refused range:

=====================  ==========================================  ===============
class                  ranges                                      allowed by
=====================  ==========================================  ===============
loopback               127.0.0.0/8, ::1                            allow_private
private                10/8, 172.16/12, 192.168/16, fc00::/7,      allow_private
                       fec0::/10, 64:ff9b:1::/48
link-local             169.254.0.0/16, fe80::/10                   allow_private
shared (CGNAT)         100.64.0.0/10                               allow_private
cloud metadata         169.254.169.254, 169.254.170.2,             allowed_networks
                       100.100.100.200, fd00:ec2::254, and the
                       name metadata.google.internal
unspecified            0.0.0.0/8, ::                               allowed_networks
multicast              224.0.0.0/4, ff00::/8                       allowed_networks
reserved               240.0.0.0/4, documentation, benchmarking,   allowed_networks
                       and anything else not globally routable
=====================  ==========================================  ===============

IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16`` and
Teredo) are judged by the IPv4 address inside them, so ``::ffff:127.0.0.1`` is
loopback.

``allowed_networks`` lists CIDR ranges that are reachable whatever their class
(e.g. ``["10.20.0.0/16"]`` for one internal data server); it is the only way to
reach a metadata, multicast or reserved address. ``allow_private=True`` opens the
loopback, private, link-local and shared classes, never the metadata service.

Checking the address is only half of the defence: a host name can resolve to a
public address when checked and to ``127.0.0.1`` a moment later (DNS rebinding).
Callers must therefore connect to the address :meth:`AddressPolicy.check_url`
returned, not resolve the name again; :class:`~sclib.transfers.http.HTTPSource`
does.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sclib.errors import BlockedAddress, InvalidInput, SourceError
from sclib.paths import safe_url

__all__ = [
    "ALLOWED_SCHEMES",
    "AddressPolicy",
    "IPAddress",
    "ResolvedAddress",
    "Resolver",
    "safe_url",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: the signature of :func:`socket.getaddrinfo`
Resolver = Callable[..., list[tuple[Any, ...]]]

#: URL schemes a URL source may use
ALLOWED_SCHEMES: frozenset[str] = frozenset({"http", "https"})

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: the classes ``allow_private=True`` opens
_PRIVATE_CLASSES = frozenset({"loopback", "private", "link-local", "shared (CGNAT)"})

#: host names of cloud metadata services, refused by name whatever they resolve to
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog"})


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


#: (class, networks), first match wins: metadata before link-local and private
_BLOCKED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    (
        "cloud metadata",
        _nets(
            "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack...
            "169.254.170.2/32",  # AWS ECS task metadata
            "100.100.100.200/32",  # Alibaba Cloud
            "fd00:ec2::254/128",  # AWS IMDS over IPv6
        ),
    ),
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    (
        "private",
        _nets(
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",  # unique local
            "fec0::/10",  # site-local (deprecated)
            "64:ff9b:1::/48",  # local-use NAT64
        ),
    ),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("shared (CGNAT)", _nets("100.64.0.0/10")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    (
        "reserved",
        _nets(
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # documentation
            "198.51.100.0/24",
            "203.0.113.0/24",
            "198.18.0.0/15",  # benchmarking
            "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
            "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
            "100::/64",  # discard-only
            "2001:db8::/32",  # documentation
            "2001:2::/48",  # benchmarking
            "2001:10::/28",  # ORCHID
            "3fff::/20",  # documentation
        ),
    ),
)

_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """One address a checked URL's host resolved to, and may be connected to.

    :param host: the host name as written in the URL (lower case, no brackets).
    :param ip: the address.
    :param port: the port to connect to (the scheme's default if the URL has none).
    :param family: :data:`socket.AF_INET` or :data:`socket.AF_INET6`.
    """

    host: str
    ip: IPAddress
    port: int
    family: int

    @property
    def url_host(self) -> str:
        """The address as a URL host: IPv6 in brackets."""
        return f"[{self.ip}]" if self.ip.version == 6 else str(self.ip)


def _embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and the name of the form."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip in _IPV4_MAPPED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip.teredo is not None:
        # (server, client): the client is the address traffic finally reaches
        return ip.teredo[1], "Teredo"
    return None


def _classify(ip: IPAddress) -> tuple[str, str] | None:
    """``(class, range)`` of a refused address, or ``None`` if it is public."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner, form = embedded
        found = _classify(inner)
        if found is None:
            return None
        cls, where = found
        return cls, f"{form} form of {inner}, in {where}"
    for cls, nets in _BLOCKED:
        for net in nets:
            if ip in net:
                return cls, str(net)
    if not ip.is_global:
        return "reserved", "not globally routable"
    return None


def _setting_hint(cls: str) -> str:
    if cls in _PRIVATE_CLASSES:
        return (
            "to allow it, set allow_private=True or list its network in "
            "allowed_networks"
        )
    return (
        f"{cls} addresses are refused even with allow_private=True; to allow it, "
        "list its network in allowed_networks"
    )


class AddressPolicy:
    """Decides which hosts a URL source may connect to.

    :param allow_private: also allow loopback, private (RFC 1918, unique local),
        link-local and shared (CGNAT) addresses. Never allows cloud metadata.
    :param allowed_networks: CIDR ranges allowed whatever their class, e.g.
        ``["127.0.0.0/8"]`` or ``["10.1.2.3/32", "fd12::/16"]``.
    :param resolver: replaces :func:`socket.getaddrinfo` (for tests).
    """

    def __init__(
        self,
        allow_private: bool = False,
        allowed_networks: Sequence[str] = (),
        *,
        resolver: Resolver | None = None,
    ) -> None:
        if isinstance(allowed_networks, str):
            raise InvalidInput(
                "allowed_networks must be a list of CIDR ranges, not one string: "
                f"use [{allowed_networks!r}]"
            )
        networks: list[IPNetwork] = []
        for cidr in allowed_networks:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as exc:
                raise InvalidInput(
                    f"allowed_networks: {cidr!r} is not a network in CIDR form "
                    f"(like '10.0.0.0/8' or 'fd00::/8'): {exc}"
                ) from exc
        self.allow_private = bool(allow_private)
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(networks)
        self._resolve: Resolver = resolver or socket.getaddrinfo

    def __repr__(self) -> str:
        nets = [str(n) for n in self.allowed_networks]
        return (
            f"AddressPolicy(allow_private={self.allow_private}, "
            f"allowed_networks={nets})"
        )

    def _explicitly_allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded[0])
        return any(
            c.version == net.version and c in net
            for c in candidates
            for net in self.allowed_networks
        )

    def blocked_reason(self, ip: IPAddress | str) -> str | None:
        """Why ``ip`` is refused (its class and range, and the setting that would
        allow it), or ``None`` if this policy allows it."""
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip)
            except ValueError as exc:
                raise InvalidInput(f"{ip!r} is not an IP address") from exc
        if self._explicitly_allowed(ip):
            return None
        found = _classify(ip)
        if found is None:
            return None
        cls, net = found
        if self.allow_private and cls in _PRIVATE_CLASSES:
            return None
        return f"{cls} ({net}); {_setting_hint(cls)}"

    def check_ip(self, host: str, ip: IPAddress | str) -> None:
        """Raise :class:`BlockedAddress` if ``host``'s address ``ip`` is refused."""
        reason = self.blocked_reason(ip)
        if reason is not None:
            raise BlockedAddress(
                f"refusing to connect to host {host!r}: it resolves to {ip}, which "
                f"is {reason}"
            )

    def check_url(self, url: str) -> list[ResolvedAddress]:
        """Resolve ``url``'s host and return its addresses, all allowed.

        Raises :class:`~sclib.errors.BlockedAddress` if the scheme is not http or
        https or if **any** address is refused, :class:`~sclib.errors.InvalidInput`
        if the URL has no host or a bad port, and :class:`~sclib.errors.SourceError`
        if the name does not resolve.
        """
        shown = safe_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidInput(f"bad URL {shown}: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise BlockedAddress(
                f"refusing {shown}: only http and https URLs may be fetched, "
                f"not {scheme or 'scheme-less'!r} ones"
            )
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise InvalidInput(f"bad URL {shown}: it names no host")
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        addresses = self._resolve_host(host, port)
        if host in _METADATA_NAMES and not (
            addresses and all(self._explicitly_allowed(a.ip) for a in addresses)
        ):
            raise BlockedAddress(
                f"refusing to connect to host {host!r} "
                f"({', '.join(str(a.ip) for a in addresses) or 'unresolved'}): it is "
                f"the cloud metadata service; {_setting_hint('cloud metadata')}"
            )
        for address in addresses:
            self.check_ip(host, address.ip)
        logger.debug(
            "%s resolves to %s: allowed",
            host,
            ", ".join(str(a.ip) for a in addresses),
        )
        return addresses

    def _resolve_host(self, host: str, port: int) -> list[ResolvedAddress]:
        try:
            infos = self._resolve(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (socket.gaierror, UnicodeError) as exc:
            if host in _METADATA_NAMES:
                return []
            raise SourceError(f"cannot resolve host {host!r}: {exc}") from exc
        addresses: list[ResolvedAddress] = []
        seen: set[IPAddress] = set()
        for family, _type, _proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            # drop an IPv6 zone ("fe80::1%eth0"): the address decides the class
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip in seen:
                continue
            seen.add(ip)
            addresses.append(ResolvedAddress(host, ip, port, int(family)))
        if not addresses and host not in _METADATA_NAMES:
            raise SourceError(f"host {host!r} resolved to no IPv4 or IPv6 address")
        return addresses
