"""The client address the rate limits count: the peer, or behind trusted
proxies the right-most X-Forwarded-For entry that is not one of them."""

from __future__ import annotations

import ipaddress

import pytest

from ledgerline.platform.client_address import (
    TrustedProxies,
    parse_address,
    parse_grpc_peer,
)

PARSED: dict[str, tuple[str, str | None]] = {
    # id: (text, address)
    "ipv4": ("192.0.2.7", "192.0.2.7"),
    "ipv4-with-port": ("192.0.2.7:4711", "192.0.2.7"),
    "ipv4-padded": ("  192.0.2.7 ", "192.0.2.7"),
    "ipv6": ("2001:db8::1", "2001:db8::1"),
    "ipv6-in-brackets": ("[2001:db8::1]", "2001:db8::1"),
    "ipv6-with-port": ("[2001:db8::1]:4711", "2001:db8::1"),
    "ipv4-mapped-ipv6": ("::ffff:192.0.2.7", "192.0.2.7"),
    "unknown": ("unknown", None),
    "obfuscated": ("_hidden", None),
    "empty": ("", None),
    "hostname": ("proxy.example.com", None),
    "unclosed-bracket": ("[2001:db8::1", None),
}


@pytest.mark.parametrize(("text", "address"), list(PARSED.values()), ids=list(PARSED))
def test_address_as_peers_and_proxies_write_it(text: str, address: str | None) -> None:
    parsed = parse_address(text)

    assert (None if parsed is None else str(parsed)) == address


GRPC_PEERS: dict[str, tuple[str, str | None]] = {
    "ipv4": ("ipv4:127.0.0.1:50432", "127.0.0.1"),
    "ipv6": ("ipv6:[::1]:50432", "::1"),
    "ipv6-as-grpcio-writes-it": ("ipv6:%5B2001:db8::7%5D:50432", "2001:db8::7"),
    "ipv6-mapped-encoded": ("ipv6:%5B::ffff:192.0.2.9%5D:50432", "192.0.2.9"),
    "ipv6-mapped": ("ipv6:[::ffff:10.1.2.3]:50432", "10.1.2.3"),
    "unix-socket": ("unix:/run/ledgerline.sock", None),
    "unknown-family": ("vsock:3:50051", None),
}


@pytest.mark.parametrize(("peer", "address"), list(GRPC_PEERS.values()), ids=list(GRPC_PEERS))
def test_grpc_peer(peer: str, address: str | None) -> None:
    parsed = parse_grpc_peer(peer)

    assert (None if parsed is None else str(parsed)) == address


PROXIES = TrustedProxies(
    [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
)
NONE_TRUSTED = TrustedProxies()

CLIENTS: dict[str, tuple[TrustedProxies, str | None, list[str], str | None]] = {
    # id: (trusted proxies, peer, X-Forwarded-For fields, client)
    "no-proxies-configured-header-ignored": (
        NONE_TRUSTED,
        "10.0.0.5",
        ["198.51.100.9"],
        "10.0.0.5",
    ),
    "untrusted-peer-header-ignored": (PROXIES, "203.0.113.4", ["198.51.100.9"], "203.0.113.4"),
    "trusted-peer-no-header": (PROXIES, "10.0.0.5", [], "10.0.0.5"),
    "trusted-peer-one-entry": (PROXIES, "10.0.0.5", ["198.51.100.9"], "198.51.100.9"),
    "right-most-untrusted-wins-over-spoofed": (
        PROXIES,
        "10.0.0.5",
        ["1.2.3.4, 198.51.100.9"],
        "198.51.100.9",
    ),
    "chain-of-trusted-proxies-skipped": (
        PROXIES,
        "10.0.0.5",
        ["1.2.3.4, 198.51.100.9, 10.0.0.7, 10.9.9.9"],
        "198.51.100.9",
    ),
    "several-fields-read-as-one-list": (
        PROXIES,
        "10.0.0.5",
        ["1.2.3.4", "198.51.100.9, 10.0.0.7"],
        "198.51.100.9",
    ),
    "all-entries-trusted-left-most-is-client": (
        PROXIES,
        "10.0.0.5",
        ["10.1.1.1, 10.2.2.2"],
        "10.1.1.1",
    ),
    "entry-with-port": (PROXIES, "10.0.0.5", ["198.51.100.9:5555"], "198.51.100.9"),
    "ipv6-client-behind-ipv6-proxy": (
        PROXIES,
        "2001:db8::1",
        ["2001:db8:1::2, 2a00::7"],
        "2a00::7",
    ),
    "ipv4-mapped-peer-is-trusted": (PROXIES, "::ffff:10.0.0.5", ["198.51.100.9"], "198.51.100.9"),
    "garbage-stops-at-the-proxy-that-wrote-it": (
        PROXIES,
        "10.0.0.5",
        ["198.51.100.9, unknown, 10.0.0.7"],
        "10.0.0.7",
    ),
    "garbage-from-the-nearest-proxy-is-the-peer": (PROXIES, "10.0.0.5", ["junk"], "10.0.0.5"),
    "empty-entries-skipped": (PROXIES, "10.0.0.5", [" , 198.51.100.9 , "], "198.51.100.9"),
    "unknown-peer": (PROXIES, None, ["198.51.100.9"], None),
}


@pytest.mark.parametrize(
    ("proxies", "peer", "forwarded_for", "client"), list(CLIENTS.values()), ids=list(CLIENTS)
)
def test_client_address(
    proxies: TrustedProxies, peer: str | None, forwarded_for: list[str], client: str | None
) -> None:
    peer_address = None if peer is None else parse_address(peer)

    found = proxies.client_address(peer_address, forwarded_for)

    assert (None if found is None else str(found)) == client
