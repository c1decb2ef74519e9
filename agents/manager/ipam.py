"""Address management for overlay networks: subnets, VXLAN ids, and addresses inside each network.

Docker's defaults: overlay subnets come from the 10.0.0.0/8 pool in /24 steps (the ingress network owns
10.0.0.0/24, so the first user network gets 10.0.1.0/24), the gateway is the first host address, VXLAN
ids start at 4096. Inside a network, addresses (service VIPs and task addresses) are handed out
serially like SwarmKit's IPAM: the next free address after the last one given, wrapping around, so a
just-freed address is not reused at once (stale ARP/DNS entries elsewhere would point at a new owner).
Everything here is rebuilt from the store by the allocator; nothing is persisted on its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

DEFAULT_POOL = ipaddress.IPv4Network("10.0.0.0/8")
DEFAULT_PREFIX = 24
INGRESS_SUBNET = "10.0.0.0/24"
INGRESS_GATEWAY = "10.0.0.1"
VXLAN_START = 4096
VXLAN_END = (1 << 24) - 1
VXLAN_OPTION = "com.docker.network.driver.overlay.vxlanid_list"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class IPAMError(Exception):
    pass


class NetworkAddresses:
    """The addresses of one network: who holds which, and where the serial cursor is."""

    def __init__(self, subnet: IPNetwork, gateway: str = "", ip_range: str = "") -> None:
        self.subnet = subnet
        self.prefixlen = subnet.prefixlen
        rng = ipaddress.ip_network(ip_range, strict=False) if ip_range else subnet
        first, last = int(rng.network_address), int(rng.broadcast_address)
        if rng.num_addresses > 2:
            first, last = first + 1, last - 1  # network and broadcast addresses are not usable
        self.first, self.last = first, last
        self.gateway = gateway or str(ipaddress.ip_address(int(subnet.network_address) + 1))
        self.used: dict[int, str] = {int(ipaddress.ip_address(self.gateway)): "gateway"}
        self.cursor = first - 1

    def reserve(self, addr: str, owner: str) -> bool:
        """Mark ``addr`` (``a.b.c.d/nn`` or bare) as held by ``owner``; False if someone else holds it."""
        n = int(ipaddress.ip_interface(addr).ip)
        holder = self.used.setdefault(n, owner)
        if holder != owner:
            return False
        if n > self.cursor:
            self.cursor = n
        return True

    def allocate(self, owner: str) -> str:
        """The next free address after the cursor, as ``a.b.c.d/nn``."""
        size = self.last - self.first + 1
        used = self.used
        n = self.cursor
        for _ in range(size):
            n = n + 1 if n < self.last else self.first
            if n not in used:
                used[n] = owner
                self.cursor = n
                return f"{ipaddress.ip_address(n)}/{self.prefixlen}"
        raise IPAMError("no available IPv4 addresses on this network's address pools")

    def release(self, addr: str, owner: str) -> None:
        n = int(ipaddress.ip_interface(addr).ip)
        if self.used.get(n) == owner:
            del self.used[n]


class SubnetPool:
    """Subnets in use by networks, and picking the next free default /24."""

    def __init__(self) -> None:
        self.used: dict[str, IPNetwork] = {}
        """Network id -> its subnet."""

    def overlapping(self, subnet: IPNetwork, network_id: str = "") -> str | None:
        """The id of a network whose subnet overlaps ``subnet`` (other than ``network_id``)."""
        for nid, other in self.used.items():
            if nid != network_id and other.version == subnet.version and other.overlaps(subnet):
                return nid
        return None

    def take(self, network_id: str, subnet: IPNetwork) -> None:
        self.used[network_id] = subnet

    def release(self, network_id: str) -> None:
        self.used.pop(network_id, None)

    def next_free(self) -> IPNetwork:
        for candidate in _candidates():
            if self.overlapping(candidate) is None:
                return candidate
        raise IPAMError("could not find an available, non-overlapping IPv4 address pool")


def _candidates() -> Iterator[IPNetwork]:
    return DEFAULT_POOL.subnets(new_prefix=DEFAULT_PREFIX)


class VXLANPool:
    def __init__(self) -> None:
        self.used: dict[int, str] = {}

    def take(self, vni: int, network_id: str) -> bool:
        return self.used.setdefault(vni, network_id) == network_id

    def allocate(self, network_id: str) -> int:
        for vni in range(VXLAN_START, VXLAN_END + 1):
            if vni not in self.used:
                self.used[vni] = network_id
                return vni
        raise IPAMError("no available VXLAN ids")

    def release_network(self, network_id: str) -> None:
        for vni in [v for v, nid in self.used.items() if nid == network_id]:
            del self.used[vni]
