"""The task network between nodes: per overlay network, the executor's bridge ``tn<net>`` on every node
(same gateway address everywhere: an anycast gateway, so a task's default route is always its own
node) plus a VXLAN device ``vxm<vni>`` (dstport 4789, over the lab interface) enslaved to it.

Learning mode with head-end replication: an all-zero FDB entry per other node floods broadcast/unknown
frames (ARP) to every peer, and the VXLAN device learns remote task MACs from what it receives. The
gateway and VIP addresses exist on every node, so ARP for them must stay node-local: the bridge table
in `rules.base_script` drops such ARP on VXLAN ports, and turns the node's own requests into ARP
probes there (a task updates the entry of any sender it hears, its gateway's included). Each bridge
gets a fixed MAC (`bridge_mac`): the gateway's MAC must not change under the tasks.

Without VXLAN (``static`` mode) each node routes every remote task address (/32) to the lab IP of the
task's node and answers ARP for it on its bridges (proxy ARP): same reachability, routed not bridged.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from agents.mesh.commands import Runner
from agents.mesh.rules import bridge_name, vxlan_name
from agents.mesh.table import MeshTable

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
OVERLAY_MTU = 1450


@dataclass
class OverlayState:
    bridges: dict[str, str] = field(default_factory=dict)
    """Bridge -> gateway/prefix."""
    vxlans: dict[str, str] = field(default_factory=dict)
    """VXLAN device -> bridge."""
    peers: dict[str, set[str]] = field(default_factory=dict)
    """VXLAN device -> peer lab IPs with a flood entry."""
    vips: set[tuple[str, str]] = field(default_factory=set)
    """(bridge, VIP) addresses."""
    routes: dict[str, str] = field(default_factory=dict)
    """Static mode: remote task IP -> via."""


def desired(table: MeshTable, node_id: str, lab_ip: str, mode: str) -> OverlayState:
    st = OverlayState()
    peers = {n.addr for n in table.nodes.values() if n.addr and n.addr != lab_ip and n.id != node_id}
    for n in table.networks.values():
        br = bridge_name(n.id)
        st.bridges[br] = f"{n.gateway}/{n.prefixlen}"
        if mode == "vxlan" and n.vni:
            vx = vxlan_name(n.vni)
            st.vxlans[vx] = br
            st.peers[vx] = set(peers)
    for s in table.services.values():
        for net, vip in s.vips.items():
            if net in table.networks:
                st.vips.add((bridge_name(net), vip))
        if mode == "static":
            for t in s.tasks:
                node = table.nodes.get(t.node_id)
                if t.node_id == node_id or node is None or not node.addr:
                    continue
                for net, addr in t.addrs.items():
                    if net in table.networks:
                        st.routes[addr] = node.addr
    return st


def bridge_mac(lab_ip: str, bridge: str) -> str:
    """A fixed, node-unique MAC for a task bridge. A bridge without one takes the lowest MAC of its
    ports and changes it when a task's veth comes or goes; the node's tasks keep the old MAC for their
    gateway until ARP notices (seconds), and their replies are flooded into the overlay meanwhile."""
    digest = hashlib.sha256(f"{lab_ip}/{bridge}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))  # locally administered, unicast


def diff(old: OverlayState, new: OverlayState, lab_ip: str, lab_dev: str) -> tuple[list[str], list[str]]:
    """``ip`` and ``bridge`` batch lines turning ``old`` into ``new``."""
    ip: list[str] = []
    br: list[str] = []
    for name, addr in new.bridges.items():
        if old.bridges.get(name) != addr:
            ip += [f"link add {name} type bridge", f"link set {name} address {bridge_mac(lab_ip, name)}",
                   f"addr add {addr} dev {name}", f"link set {name} up"]
    for vx, bridge in new.vxlans.items():
        if vx not in old.vxlans:
            vni = vx.removeprefix("vxm")
            ip += [
                f"link add {vx} type vxlan id {vni} dstport {VXLAN_PORT} local {lab_ip} dev {lab_dev}",
                f"link set {vx} mtu {OVERLAY_MTU}",
                f"link set {vx} master {bridge}",
                f"link set {vx} up",
            ]
    for vx in old.vxlans:
        if vx not in new.vxlans:
            ip.append(f"link del {vx}")
    for vx, peers in new.peers.items():
        had = old.peers.get(vx, set()) if vx in old.vxlans else set()
        br += [f"fdb append 00:00:00:00:00:00 dev {vx} dst {p}" for p in sorted(peers - had)]
        br += [f"fdb del 00:00:00:00:00:00 dev {vx} dst {p}" for p in sorted(had - peers)]
    for bridge, vip in sorted(new.vips - old.vips):
        ip.append(f"addr add {vip}/32 dev {bridge}")
    for bridge, vip in sorted(old.vips - new.vips):
        ip.append(f"addr del {vip}/32 dev {bridge}")
    for addr, via in new.routes.items():
        if old.routes.get(addr) != via:
            ip.append(f"route replace {addr}/32 via {via} dev {lab_dev}")
    for addr in old.routes:
        if addr not in new.routes:
            ip.append(f"route del {addr}/32")
    return ip, br


async def lab_device(runner: Runner, lab_ip: str) -> str:
    """The interface holding the node's lab address (``eth0`` in a lab)."""
    out = await runner.run(["ip", "-o", "-4", "addr", "show"], check=False)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].partition("/")[0] == lab_ip:
            return parts[1].split("@")[0]
    return "eth0"


BRIDGE_NF_SYSCTL = "net.bridge.bridge-nf-call-iptables"


async def prepare_node(runner: Runner, lab_dev: str = "") -> None:
    """Routing the mesh needs: forwarding on, no ICMP redirects (DNAT hairpins out the interface it came
    in on), loose reverse-path checks (replies from a remote task come back over the lab, not the
    overlay: a strict check on the lab device, as RHEL-like hosts set by default, drops them; the
    effective value is the larger of ``all`` and the device's, so both are loosened).

    ``route_localnet``: a published port reached at 127.0.0.1 from the node itself is DNATed in the
    output hook to a task address, and the kernel refuses to route a 127.0.0.0/8 source (and the
    de-NATed reply's 127.0.0.1 destination) off the loopback device without it. The packet leaves
    SNATed to the lab address; `rules.base_script` drops anything else arriving for 127.0.0.0/8.

    And bridged IPv4 kept out of the ip hooks (``br_netfilter``, built into many kernels and on by default
    in every namespace): with it, a task's packet to a VIP is DNATed while still inside the bridge and,
    the backend being on the same bridge, switched at L2 to the backend's port. When the pick is the
    sending task itself that is the port the frame came in on, which a bridge never sends back out
    (no hairpin mode): the SYN is dropped, the retransmit takes the next ``numgen`` pick, so every
    connection costs one second and lands on the other backend. Routed, DNAT + SNAT just work."""
    await runner.sysctl("net.ipv4.ip_forward", "1")
    await runner.sysctl("net.ipv4.conf.all.send_redirects", "0")
    await runner.sysctl("net.ipv4.conf.default.send_redirects", "0")
    for conf in ("all", "default", *([lab_dev] if lab_dev else [])):
        await loosen_rp_filter(runner, conf)
    await runner.sysctl("net.ipv4.conf.all.route_localnet", "1")
    if (await runner.read_sysctl(BRIDGE_NF_SYSCTL)) == "1":  # per namespace since Linux 5.3
        await runner.sysctl(BRIDGE_NF_SYSCTL, "0")


async def loosen_rp_filter(runner: Runner, conf: str) -> None:
    """A strict reverse-path check (1) on ``conf`` becomes loose (2); off (0) stays off."""
    if (await runner.read_sysctl(f"net.ipv4.conf.{conf}.rp_filter")) == "1":
        await runner.sysctl(f"net.ipv4.conf.{conf}.rp_filter", "2")


async def bridged_nat(runner: Runner) -> bool:
    """True when bridged IPv4 still goes through the ip hooks (the sysctl could not be turned off)."""
    return (await runner.read_sysctl(BRIDGE_NF_SYSCTL)) == "1"


async def apply(runner: Runner, old: OverlayState, new: OverlayState, lab_ip: str, lab_dev: str,
                mode: str) -> None:
    ip, br = diff(old, new, lab_ip, lab_dev)
    await runner.ip(ip)
    await runner.bridge(br)
    for name in new.bridges:
        if name not in old.bridges:
            await runner.sysctl(f"net.ipv4.conf.{name}.send_redirects", "0")
            await loosen_rp_filter(runner, name)  # the executor may have made it before ``default`` changed
            if mode == "static":
                await runner.sysctl(f"net.ipv4.conf.{name}.proxy_arp", "1")


async def teardown(runner: Runner, st: OverlayState) -> None:
    """Remove what the mesh added (VXLAN devices, VIP addresses, routes); bridges stay the executor's."""
    cmds = [f"link del {vx}" for vx in st.vxlans]
    cmds += [f"addr del {vip}/32 dev {bridge}" for bridge, vip in st.vips]
    cmds += [f"route del {addr}/32" for addr in st.routes]
    await runner.ip(cmds)
