"""The address policy of URL sources: which hosts may be reached (SSRF guard)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from sclib.errors import BlockedAddress, InvalidInput, SourceError
from sclib.transfers.ssrf import AddressPolicy, ResolvedAddress, Resolver, safe_url


def _resolver(*ips: str) -> Resolver:
    """A getaddrinfo stand-in answering every name with ``ips``."""

    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        answers: list[tuple[object, ...]] = []
        for ip in ips:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            answers.append((family, socket.SOCK_STREAM, 6, "", (ip, port)))
        return answers

    return resolve


def _failing_resolver(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


#: (IP literal, words the refusal must contain)
BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved"),
    ("2001:db8::1", "reserved"),
    # IPv6 forms carrying an IPv4 address
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:169.254.10.10", "link-local"),
    ("::ffff:100.64.0.1", "CGNAT"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:224.0.0.1", "multicast"),
    ("::ffff:7f00:1", "loopback"),
    ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1"),
    ("64:ff9b::a00:1", "NAT64 form of 10.0.0.1"),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
]

PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


def _url(ip: str) -> str:
    return f"http://[{ip}]:8080/x" if ":" in ip else f"http://{ip}:8080/x"


@pytest.mark.parametrize(("ip", "words"), BLOCKED)
def test_each_blocked_class_is_refused(ip: str, words: str) -> None:
    """Every refused class, in IPv4, IPv6 and IPv4-in-IPv6 forms, raises
    BlockedAddress naming the address, the class and the setting to change."""
    with pytest.raises(BlockedAddress) as info:
        AddressPolicy().check_url(_url(ip))
    message = str(info.value)
    assert words in message
    assert str(ipaddress.ip_address(ip)) in message
    assert "allowed_networks" in message


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_are_allowed(ip: str) -> None:
    """Public addresses pass and come back as the addresses to connect to."""
    [address] = AddressPolicy().check_url(_url(ip))
    assert address == ResolvedAddress(
        ip, ipaddress.ip_address(ip), 8080, address.family
    )


@pytest.mark.parametrize(
    "host", ["localhost", "2130706433", "127.1", "0x7f.0.0.1", "LOCALHOST."]
)
def test_names_and_odd_ipv4_spellings_are_resolved_then_refused(host: str) -> None:
    """Names and unusual IPv4 spellings are judged by what they resolve to."""
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1.*loopback"):
        AddressPolicy().check_url(f"http://{host}/")


def test_message_names_host_address_reason_and_setting() -> None:
    """The refusal names the host as written, the address, why, and that
    allow_private would allow a private address."""
    policy = AddressPolicy(resolver=_resolver("10.0.0.5"))
    with pytest.raises(BlockedAddress) as info:
        policy.check_url("https://data.internal.example/file")
    message = str(info.value)
    for part in ("'data.internal.example'", "10.0.0.5", "private", "allow_private"):
        assert part in message


def test_any_blocked_address_refuses_the_host() -> None:
    """A name resolving to a public and a private address is refused."""
    policy = AddressPolicy(resolver=_resolver("93.184.216.34", "192.168.0.9"))
    with pytest.raises(BlockedAddress, match=r"192\.168\.0\.9"):
        policy.check_url("http://mixed.example/")


def test_metadata_name_is_refused_even_unresolved() -> None:
    """metadata.google.internal is refused whether it resolves to the metadata
    address or does not resolve at all, and allow_private does not open it."""
    resolving = AddressPolicy(allow_private=True, resolver=_resolver("169.254.169.254"))
    with pytest.raises(BlockedAddress, match="cloud metadata"):
        resolving.check_url("http://metadata.google.internal/computeMetadata/v1/")
    unresolved = AddressPolicy(resolver=_failing_resolver)
    with pytest.raises(BlockedAddress, match="metadata"):
        unresolved.check_url("http://metadata.google.internal/")


def test_allow_private_opens_private_classes_only() -> None:
    """allow_private allows loopback, private, link-local and CGNAT (IPv4, IPv6 and
    mapped forms), but not metadata, unspecified, multicast or reserved."""
    policy = AddressPolicy(allow_private=True)
    for ip in ("127.0.0.1", "::1", "10.0.0.1", "fd00::1", "fe80::1", "100.64.1.1"):
        assert policy.blocked_reason(ip) is None, ip
    assert policy.blocked_reason("::ffff:192.168.0.1") is None
    for ip in ("169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1", "240.0.0.1"):
        reason = policy.blocked_reason(ip)
        assert reason is not None and "even with allow_private=True" in reason, ip


def test_allowed_networks_allow_only_their_ranges() -> None:
    """allowed_networks opens exactly the listed CIDRs, including their IPv4-mapped
    forms, and can open the metadata address when asked explicitly."""
    policy = AddressPolicy(allowed_networks=["127.0.0.0/8", "169.254.169.254/32"])
    assert policy.check_url("http://127.0.0.1:1/")[0].ip == ipaddress.ip_address(
        "127.0.0.1"
    )
    assert policy.blocked_reason("::ffff:127.0.0.9") is None
    assert policy.blocked_reason("169.254.169.254") is None
    assert policy.blocked_reason("169.254.169.253") is not None
    assert policy.blocked_reason("10.0.0.1") is not None
    assert policy.blocked_reason("::1") is not None  # IPv6 loopback is not listed
    narrow = AddressPolicy(allowed_networks=["127.0.0.2/32"])
    assert narrow.blocked_reason("127.0.0.2") is None
    assert narrow.blocked_reason("127.0.0.1") is not None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://h/", "//h/x"]
)
def test_only_http_and_https(url: str) -> None:
    """Schemes other than http and https are refused before any lookup."""
    policy = AddressPolicy(resolver=_failing_resolver)
    with pytest.raises(BlockedAddress, match="only http and https"):
        policy.check_url(url)


def test_bad_urls_and_settings_are_invalid_input() -> None:
    """A URL without host or with a bad port, a malformed CIDR, and a single string
    for allowed_networks raise InvalidInput."""
    with pytest.raises(InvalidInput, match="no host"):
        AddressPolicy().check_url("http:///path")
    with pytest.raises(InvalidInput, match="bad URL"):
        AddressPolicy().check_url("http://example.com:99999/")
    with pytest.raises(InvalidInput, match="CIDR"):
        AddressPolicy(allowed_networks=["10.0.0.0/33"])
    with pytest.raises(InvalidInput, match="list"):
        AddressPolicy(allowed_networks="10.0.0.0/8")


def test_unresolvable_name_is_a_source_error() -> None:
    """A name that does not resolve raises SourceError, not BlockedAddress."""
    with pytest.raises(SourceError, match=r"cannot resolve host 'nowhere\.example'"):
        AddressPolicy(resolver=_failing_resolver).check_url("http://nowhere.example/")


def test_safe_url_hides_user_info_and_query_values() -> None:
    """safe_url drops the user name and password and masks query values."""
    shown = safe_url("https://u:p4ss@h.example:8443/a/b?X-Amz-Signature=abc&flag#frag")
    assert shown == "https://h.example:8443/a/b?X-Amz-Signature=***&flag"
