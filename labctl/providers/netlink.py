"""Links, addresses, namespaces and routes on the host, through netlink (pyroute2): no `ip` subprocesses,
so building a lab's network takes tens of milliseconds."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from types import TracebackType

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from labctl.errors import LabError

ENODEV = 19
ENOENT = 2
EEXIST = 17


def _disable_ipv6(ifname: str) -> None:
    """Lab links carry IPv4 only: no IPv6 link-local chatter on the lab switch."""
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")


class Netlink:
    def __init__(self) -> None:
        self.ipr = IPRoute()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.ipr.close()

    def _index(self, ifname: str) -> int | None:
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def create_bridge(self, name: str, address: ipaddress.IPv4Address, prefixlen: int, alias: str) -> None:
        if self._index(name) is not None:
            raise LabError(f"bridge {name} already exists on this host (a leftover? 'labctl down' removes it)")
        self.ipr.link("add", ifname=name, kind="bridge")
        idx = self._index(name)
        assert idx is not None
        _disable_ipv6(name)
        self.ipr.link("set", index=idx, ifalias=alias)
        self.ipr.addr("add", index=idx, address=str(address), prefixlen=prefixlen)
        self.ipr.link("set", index=idx, state="up")

    def create_node_link(self, ns: str, veth: str, bridge: str, ip: ipaddress.IPv4Address, prefixlen: int,
                         alias: str) -> None:
        """A namespace with `lo` and `eth0` (the veth peer) up, its host end enslaved to the lab bridge."""
        if Path(f"/run/netns/{ns}").exists():
            raise LabError(f"network namespace {ns} already exists (a leftover? 'labctl down' removes it)")
        netns.create(ns)
        self.ipr.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns})
        host_end = self._index(veth)
        br = self._index(bridge)
        assert host_end is not None and br is not None
        _disable_ipv6(veth)
        self.ipr.link("set", index=host_end, ifalias=alias)
        self.ipr.link("set", index=host_end, master=br, state="up")
        with NetNS(ns) as inner:
            eth0 = inner.link_lookup(ifname="eth0")[0]
            inner.addr("add", index=eth0, address=str(ip), prefixlen=prefixlen)
            inner.link("set", index=eth0, state="up")
            lo = inner.link_lookup(ifname="lo")[0]
            inner.link("set", index=lo, state="up")

    def set_link_state(self, ifname: str, up: bool) -> None:
        idx = self._index(ifname)
        if idx is None:
            raise LabError(f"link {ifname} is missing; the lab is damaged ('labctl down' then 'labctl up')")
        self.ipr.link("set", index=idx, state="up" if up else "down")

    def delete_link(self, ifname: str) -> None:
        idx = self._index(ifname)
        if idx is None:
            return
        try:
            self.ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code != ENODEV:
                raise

    def delete_netns(self, name: str) -> None:
        if name in netns.listnetns():
            netns.remove(name)


def route_overlapping(subnet: ipaddress.IPv4Network, ignore_bridge: str | None = None) -> str | None:
    """The host route (other than a default route) that overlaps `subnet`, as text, or None."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(family=2):
            dst = route.get_attr("RTA_DST")
            plen = route["dst_len"]
            if dst is None or plen == 0:
                continue
            if route.get_attr("RTA_TABLE") not in (None, 254):  # main table only
                continue
            net = ipaddress.IPv4Network(f"{dst}/{plen}", strict=False)
            dev = names.get(route.get_attr("RTA_OIF"), "?")
            if ignore_bridge and dev == ignore_bridge:
                continue
            if net.overlaps(subnet):
                return f"{net} dev {dev}"
    return None


def check_subnet_free(subnet: ipaddress.IPv4Network, ignore_bridge: str | None = None) -> None:
    clash = route_overlapping(subnet, ignore_bridge)
    if clash is not None:
        raise LabError(f"subnet {subnet} overlaps an existing route on this host ({clash}); choose another subnet")
