"""Who the client is, for the rate limits: the peer of the connection, or,
when that peer is a proxy the operator trusts, the address the proxies
recorded in ``X-Forwarded-For``. One rule for REST and gRPC."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress | None:
    """An address as a peer or a proxy writes it: ``192.0.2.7``, ``2001:db8::1``,
    with a port (``192.0.2.7:4711``, ``[2001:db8::1]:4711``) or in brackets;
    an IPv4-mapped IPv6 address is the IPv4 address. None for anything else
    (``unknown``, an obfuscated identifier, a Unix socket)."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_grpc_peer(peer: str) -> IPAddress | None:
    """The address in grpc's ``context.peer()``: ``ipv4:192.0.2.7:4711``,
    ``ipv6:[2001:db8::1]:4711``, which grpcio writes percent-encoded
    (``ipv6:%5B::1%5D:4711``); None for ``unix:...`` and the like."""
    family, _, rest = peer.partition(":")
    if family not in ("ipv4", "ipv6"):
        return None
    return parse_address(urllib.parse.unquote(rest))


class TrustedProxies:
    """The proxies (addresses or networks) whose ``X-Forwarded-For`` is
    believed. With none, the header is ignored: anyone can write it."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def client_address(
        self, peer: IPAddress | None, forwarded_for: Sequence[str] = ()
    ) -> IPAddress | None:
        """The client behind ``peer``. ``forwarded_for``: the values of every
        ``X-Forwarded-For`` field of the request, in order. Each proxy
        appends the address it was reached from, so the list is read from
        the right, past the trusted proxies: the first address that is not
        one is the client, the address the outermost trusted proxy was
        reached from. Entries left of it are whatever the client wrote,
        never believed.
        When every entry is a trusted proxy, the left-most is the client
        (the request came from inside). An entry that is not an address
        stops the walk at the proxy that wrote it: its clients then share
        that proxy's limits, rather than escape them."""
        if peer is None or not self._networks or not self.trusts(peer):
            return peer
        client = peer
        for field in reversed(forwarded_for):
            for entry in reversed(field.split(",")):
                if not entry.strip():
                    continue
                address = parse_address(entry)
                if address is None:
                    return client
                client = address
                if not self.trusts(address):
                    return address
        return client
