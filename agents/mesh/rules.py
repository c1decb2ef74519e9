"""Pure functions from a mesh table to nftables text: the node's own ``ip labctl-mesh`` table (NAT and a
little filtering) and ``bridge labctl-mesh`` (keeps the anycast gateway/VIP addresses node-local).

Shape (kube-proxy's nftables mode, shrunk)::

    prerouting/output (nat, dstnat) -> jump services
    services:  fib daddr type local  meta l4proto . th dport vmap @ingress   # published ports, any node IP
               ip daddr vmap @vips                                           # a VIP forwards every port
    svc-<service>-<net>-<proto>-<port>:  mark, dnat to numgen inc mod N map { 0 : <task ip>, … } [: port]
    postrouting (nat, srcnat): marked -> snat to <this node's lab IP>
    input (filter): 127.0.0.0/8 from outside -> drop, unless a de-NATed reply (route_localnet is on);
                    marked or VIP traffic nobody took -> reject (no backends = connection refused)
    forward (filter): a task bridge may not route into another task bridge (overlay isolation)

Connections from the node itself (its lab address or 127.0.0.1, as with Docker) take the output hook;
the SNAT to the lab address then holds for every backend: a local task answers it through its gateway
(this node), a remote one straight over the lab network, and a 127.0.0.1 source (which must not leave
the node; see `overlay.prepare_node`, ``route_localnet``) is replaced by it.

(One chain per service and port with an inline numgen map rather than kube-proxy's endpoint chains:
fewer objects for nft's ruleset cache.) Every change is one transaction holding only the changed
services' chains and map elements (`service_diff`), run through libnftables in-process
(`agents.mesh.libnft`), so a connection sees either the old or the new backend set, never a
half-built one. Replacing a chain's rule restarts its ``numgen`` counter at 0: harmless, since
changes are rare next to connections and the next pick simply starts over the new backend list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.mesh.table import MeshService, MeshTable

TABLE = "labctl-mesh"
MARK = 0x10000000
"""Packet mark bit: "DNATed by the mesh" (SNAT it on the way out, reject it if nobody took it)."""
BRIDGE_PREFIX = "tn"
VXLAN_PREFIX = "vxm"


def bridge_name(network_id: str) -> str:
    """Same name as the executor's bridge (`agents.worker.executor.netns.bridge_name`)."""
    return f"{BRIDGE_PREFIX}{network_id[:12]}"


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


@dataclass
class ServiceRules:
    """What one service owns in the table. ``chains`` is ordered: endpoint chains before the service
    chains that jump to them (a transaction must create a chain before a rule references it)."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    ingress: dict[tuple[str, int], str] = field(default_factory=dict)
    """(protocol, published port) -> service chain."""
    vips: dict[str, str] = field(default_factory=dict)
    """VIP -> service chain."""


def _short(x: str) -> str:
    return x[:10]


def service_rules(svc: MeshService, table: MeshTable) -> ServiceRules:
    """The chains and map elements of ``svc``: ingress chains for published ports (backends' ingress
    addresses, else any), one VIP chain per network (backends' addresses on that network)."""
    out = ServiceRules()
    backends = svc.backends()
    ingress_net = next((n.id for n in table.networks.values() if n.ingress), "")

    def chain(net: str, proto: str, port: int) -> str:
        suffix = f"{proto}-{port}" if proto else "all"
        name = f"svc-{_short(svc.id)}-{_short(net) or 'any'}-{suffix}"
        if name in out.chains:
            return name
        targets: list[str] = []
        for t in backends:
            addr = t.addrs.get(net) or (next(iter(sorted(t.addrs.items())))[1] if not net else "")
            if not addr and net == ingress_net:
                addr = next(iter(sorted(t.addrs.items())))[1]  # a task without an ingress address: any
            if addr:
                targets.append(addr)
        mark = f"meta mark set meta mark | {MARK:#x}"
        if targets:
            elems = ", ".join(f"{i} : {a}" for i, a in enumerate(targets))
            pick = f"numgen inc mod {len(targets)} map {{ {elems} }}"
            rule = f"{mark} meta l4proto {proto} dnat ip to {pick} : {port}" if proto else f"{mark} dnat ip to {pick}"
        else:
            rule = mark  # no backend: the input chain refuses the connection
        out.chains[name] = [rule]
        return name

    for p in svc.ports:
        if p.mode == "ingress" and p.published > 0 and p.protocol in ("tcp", "udp", "sctp"):
            net = ingress_net if ingress_net in svc.vips or not svc.vips else next(iter(sorted(svc.vips)))
            out.ingress[(p.protocol, p.published)] = chain(net, p.protocol, p.target)
    for net, vip in sorted(svc.vips.items()):
        out.vips[vip] = chain(net, "", 0)
    # endpoint chains first, service chains last
    out.chains = dict(sorted(out.chains.items(), key=lambda kv: not kv[0].startswith("ep-")))
    return out


def base_script(lab_ip: str) -> list[str]:
    """Recreate both tables from nothing (the ``table …`` line makes ``delete`` safe when absent)."""
    t = f"ip {TABLE}"
    b = f"bridge {TABLE}"
    return [
        f"table {t}",
        f"delete table {t}",
        f"table {b}",
        f"delete table {b}",
        f"add table {t}",
        f"add map {t} ingress {{ type inet_proto . inet_service : verdict; }}",
        f"add map {t} vips {{ type ipv4_addr : verdict; }}",
        f"add set {t} vipaddrs {{ type ipv4_addr; }}",
        f"add chain {t} services",
        f"add rule {t} services fib daddr type local meta l4proto . th dport vmap @ingress",
        f"add rule {t} services ip daddr vmap @vips",
        f"add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}",
        f"add rule {t} prerouting jump services",
        f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"add rule {t} output jump services",
        f"add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}",
        f"add rule {t} postrouting meta mark & {MARK:#x} == {MARK:#x} snat ip to {lab_ip}",
        f"add chain {t} input {{ type filter hook input priority 0; policy accept; }}",
        # route_localnet is on (127.0.0.1 reaches published ports): 127.0.0.0/8 from outside only as the
        # de-NATed reply of such a connection
        f'add rule {t} input iifname != "lo" ip daddr 127.0.0.0/8 ct status & snat == 0 drop',
        f"add rule {t} input meta mark & {MARK:#x} == {MARK:#x} meta l4proto tcp reject with tcp reset",
        f"add rule {t} input ip daddr @vipaddrs meta l4proto tcp reject with tcp reset",
        f"add rule {t} input ip daddr @vipaddrs reject",
        f"add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}",
        f"add table {b}",
        f"add set {b} anycast {{ type ipv4_addr; }}",
        f"add chain {b} forward {{ type filter hook forward priority 0; policy accept; }}",
        f'add rule {b} forward oifname "{VXLAN_PREFIX}*" arp daddr ip @anycast drop',
        f'add rule {b} forward iifname "{VXLAN_PREFIX}*" arp daddr ip @anycast drop',
        f"add chain {b} output {{ type filter hook output priority 0; policy accept; }}",
        f'add rule {b} output oifname "{VXLAN_PREFIX}*" arp saddr ip @anycast arp operation reply drop',
        # the node asking for a remote task's MAC: as an ARP probe (sender 0.0.0.0), so the remote task
        # does not take this node's MAC for its gateway (ARP updates the sender's entry on every host)
        f'add rule {b} output oifname "{VXLAN_PREFIX}*" arp operation request arp saddr ip @anycast '
        f"arp saddr ip set 0.0.0.0",
    ]


def service_diff(old: ServiceRules | None, new: ServiceRules | None) -> list[str]:
    """Commands turning ``old`` into ``new`` (either may be None: a service appearing or leaving)."""
    return services_diff([(old, new)])


def services_diff(changes: list[tuple[ServiceRules | None, ServiceRules | None]]) -> list[str]:
    """One transaction for several services, phase by phase: every service's chains first, then every
    map element removed, then every element added, then the chains no longer used. A VIP or port passing
    from one service to another (`agents.mesh.table.owners`) thus leaves before it is added again."""
    t = f"ip {TABLE}"
    chains: list[str] = []
    removed: list[str] = []
    added: list[str] = []
    dropped: list[str] = []
    for old, new in changes:
        old = old or ServiceRules()
        new = new or ServiceRules()
        for name, rules in new.chains.items():  # endpoint chains first: service chains jump to them
            if name not in old.chains:
                chains.append(f"add chain {t} {name}")
            elif old.chains[name] == rules:
                continue
            else:
                chains.append(f"flush chain {t} {name}")
            chains += [f"add rule {t} {name} {r}" for r in rules]
        for (proto, port), ch in old.ingress.items():
            if new.ingress.get((proto, port)) != ch:
                removed.append(f"delete element {t} ingress {{ {proto} . {port} }}")
        for vip, ch in old.vips.items():
            if new.vips.get(vip) != ch:
                removed.append(f"delete element {t} vips {{ {vip} }}")
            if vip not in new.vips:
                removed.append(f"delete element {t} vipaddrs {{ {vip} }}")
                removed.append(f"delete element bridge {TABLE} anycast {{ {vip} }}")
        for (proto, port), ch in new.ingress.items():
            if old.ingress.get((proto, port)) != ch:
                added.append(f"add element {t} ingress {{ {proto} . {port} : goto {ch} }}")
        for vip, ch in new.vips.items():
            if old.vips.get(vip) != ch:
                added.append(f"add element {t} vips {{ {vip} : goto {ch} }}")
            if vip not in old.vips:
                added.append(f"add element {t} vipaddrs {{ {vip} }}")
                added.append(f"add element bridge {TABLE} anycast {{ {vip} }}")
        gone = [name for name in old.chains if name not in new.chains]
        # service chains first now: once they no longer jump to an endpoint chain, it can go
        for name in sorted(gone, key=lambda n: n.startswith("ep-")):
            dropped += [f"flush chain {t} {name}", f"delete chain {t} {name}"]
    return chains + removed + added + dropped


def networks_script(old: MeshTable | None, new: MeshTable) -> list[str]:
    """Isolation between task bridges and the gateways in the anycast set, rebuilt whole (networks
    change rarely)."""
    t = f"ip {TABLE}"
    cmds = [f"flush chain {t} forward"]
    names = sorted(bridge_name(n) for n in new.networks)
    for name in names:
        cmds.append(f'add rule {t} forward iifname "{name}" oifname "{BRIDGE_PREFIX}*" oifname != "{name}" drop')
    old_gw = {n.gateway for n in old.networks.values()} if old else set()
    new_gw = {n.gateway for n in new.networks.values()}
    cmds += [f"delete element bridge {TABLE} anycast {{ {g} }}" for g in sorted(old_gw - new_gw)]
    cmds += [f"add element bridge {TABLE} anycast {{ {g} }}" for g in sorted(new_gw - old_gw)]
    return cmds


def full_script(table: MeshTable, lab_ip: str) -> tuple[list[str], dict[str, ServiceRules]]:
    """Everything from nothing: the base tables, the networks, every service."""
    cmds = base_script(lab_ip) + networks_script(None, table)
    programmed: dict[str, ServiceRules] = {}
    for sid in sorted(table.services):
        r = service_rules(table.services[sid], table)
        cmds += service_diff(None, r)
        programmed[sid] = r
    return cmds, programmed


def delete_script() -> list[str]:
    """Remove what the agent owns (and nothing else)."""
    return [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table bridge {TABLE}", f"delete table bridge {TABLE}"]
