"""The mesh table: what every node needs to program identical service networking, and its wire form.

Managers build it from the store (`build`); the dispatcher pushes it to every node as ``mesh`` messages
(a ``full`` table on connect, then per-service deltas); nodes fold the messages into their copy
(`MeshTable.apply`). Kept free of the store types on the node side: the table is plain data.

Wire form::

    {"type": "mesh", "full": bool,
     "services": [{"id", "name", "vips": [{"network_id", "addr"}],
                   "ports": [{"protocol", "target", "published", "mode"}], "networks": [id],
                   "tasks": [{"id", "node_id", "addrs": {network_id: ip}, "ready": bool}]}],
     "removed": [service id],            # deltas only
     "networks": [{"id", "name", "vni", "subnet", "ingress"}],   # always complete
     "nodes": [{"id", "addr", "ready"}]}                          # always complete
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class MeshPort:
    protocol: str
    target: int
    published: int
    mode: str = "ingress"


@dataclass(frozen=True, slots=True)
class MeshTask:
    id: str
    node_id: str
    addrs: dict[str, str]
    """Network id -> bare IPv4 address."""
    ready: bool


@dataclass(frozen=True, slots=True)
class MeshService:
    id: str
    name: str
    vips: dict[str, str] = field(default_factory=dict)
    """Network id -> bare VIP."""
    ports: tuple[MeshPort, ...] = ()
    networks: tuple[str, ...] = ()
    tasks: tuple[MeshTask, ...] = ()

    def backends(self) -> list[MeshTask]:
        """The tasks that may receive new connections, in a stable order (by task id)."""
        return sorted((t for t in self.tasks if t.ready and t.addrs), key=lambda t: t.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vips": [{"network_id": n, "addr": a} for n, a in sorted(self.vips.items())],
            "ports": [
                {"protocol": p.protocol, "target": p.target, "published": p.published, "mode": p.mode}
                for p in self.ports
            ],
            "networks": list(self.networks),
            "tasks": [
                {"id": t.id, "node_id": t.node_id, "addrs": dict(sorted(t.addrs.items())), "ready": t.ready}
                for t in self.tasks
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeshService:
        return cls(
            id=str(d["id"]),
            name=str(d.get("name", "")),
            vips={str(v["network_id"]): _bare(str(v["addr"])) for v in d.get("vips") or []},
            ports=tuple(
                MeshPort(str(p.get("protocol", "tcp")).lower(), int(p["target"]), int(p.get("published") or 0),
                         str(p.get("mode", "ingress")))
                for p in d.get("ports") or []
            ),
            networks=tuple(str(n) for n in d.get("networks") or []),
            tasks=tuple(
                MeshTask(str(t["id"]), str(t.get("node_id", "")),
                         {str(k): _bare(str(v)) for k, v in (t.get("addrs") or {}).items()}, bool(t.get("ready")))
                for t in d.get("tasks") or []
            ),
        )


@dataclass(frozen=True, slots=True)
class MeshNetwork:
    id: str
    name: str
    vni: int
    subnet: str
    ingress: bool = False

    @property
    def gateway(self) -> str:
        """The node's address on the network's bridge: the subnet's first host (as the executor uses)."""
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "vni": self.vni, "subnet": self.subnet, "ingress": self.ingress}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeshNetwork:
        return cls(str(d["id"]), str(d.get("name", "")), int(d.get("vni") or 0), str(d["subnet"]),
                   bool(d.get("ingress")))


@dataclass(frozen=True, slots=True)
class MeshNode:
    id: str
    addr: str
    ready: bool = True


def _bare(addr: str) -> str:
    return addr.partition("/")[0]


@dataclass
class MeshTable:
    """A node's (or the publisher's) view: services, overlay networks and nodes by id."""

    services: dict[str, MeshService] = field(default_factory=dict)
    networks: dict[str, MeshNetwork] = field(default_factory=dict)
    nodes: dict[str, MeshNode] = field(default_factory=dict)

    def apply(self, msg: dict[str, Any]) -> set[str]:
        """Fold one ``mesh`` message in; returns the ids of services whose entry changed or left."""
        changed: set[str] = set()
        incoming = {s.id: s for s in (MeshService.from_dict(d) for d in msg.get("services") or [])}
        if msg.get("full"):
            changed |= {sid for sid in self.services if sid not in incoming}
            self.services = {}
        for sid in msg.get("removed") or []:
            if self.services.pop(str(sid), None) is not None:
                changed.add(str(sid))
        for sid, s in incoming.items():
            if self.services.get(sid) != s:
                changed.add(sid)
            self.services[sid] = s
        if "networks" in msg:
            self.networks = {n.id: n for n in (MeshNetwork.from_dict(d) for d in msg["networks"] or [])}
        if "nodes" in msg:
            self.nodes = {
                str(d["id"]): MeshNode(str(d["id"]), str(d.get("addr", "")), bool(d.get("ready", True)))
                for d in msg["nodes"] or []
            }
        return changed

    def full_message(self) -> dict[str, Any]:
        return {
            "type": "mesh",
            "full": True,
            "services": [s.to_dict() for s in self.services.values()],
            "networks": [n.to_dict() for n in self.networks.values()],
            "nodes": [{"id": n.id, "addr": n.addr, "ready": n.ready} for n in self.nodes.values()],
        }

    def delta_message(self, new: MeshTable) -> dict[str, Any] | None:
        """The message turning this table into ``new`` (None when nothing differs)."""
        services = [s.to_dict() for sid, s in new.services.items() if self.services.get(sid) != s]
        removed = [sid for sid in self.services if sid not in new.services]
        if not services and not removed and self.networks == new.networks and self.nodes == new.nodes:
            return None
        msg = new.full_message()
        msg.update(full=False, services=services, removed=removed)
        return msg

    def task_by_addr(self) -> dict[str, tuple[MeshService, MeshTask]]:
        """Task address -> (service, task), for the DNS responder's "who is asking"."""
        out: dict[str, tuple[MeshService, MeshTask]] = {}
        for s in self.services.values():
            for t in s.tasks:
                for a in t.addrs.values():
                    out[a] = (s, t)
        return out


Claim = tuple[str, str]
"""What only one service can hold on a node: ``("vip", addr)`` or ``("port", "tcp/8080")``."""


def claimants(table: MeshTable) -> dict[Claim, list[str]]:
    """The services claiming each VIP and published ingress port, lowest id first: that one holds it,
    the same on every node. Two claimants are a conflict the allocator should never allow; only the
    holder's rules carry the claim, so one conflict cannot make every transaction of the node fail."""
    out: dict[Claim, list[str]] = {}
    for sid in sorted(table.services):
        s = table.services[sid]
        claims = {("vip", v) for v in s.vips.values()}
        claims |= {("port", f"{p.protocol}/{p.published}") for p in s.ports if p.mode == "ingress" and p.published}
        for c in claims:
            out.setdefault(c, []).append(sid)
    return out


def build(store: Any) -> MeshTable:
    """The table from a manager's store (leader side). A task is a backend only while observed RUNNING,
    desired RUNNING and on a READY node: a task told to stop leaves every node's maps before it stops."""
    from agents.manager.ipam import VXLAN_OPTION
    from agents.state.objects import Network, Node, NodeState, Service, TaskState

    table = MeshTable()
    for n in store.list(Network):
        a = n.allocated
        if a is None or n.spec.driver != "overlay" or not a.subnet or n.pending_delete:
            continue
        vni = a.driver_state.options.get(VXLAN_OPTION, "")
        table.networks[n.id] = MeshNetwork(n.id, n.spec.name, int(vni) if vni.isdigit() else 0, a.subnet,
                                           n.spec.ingress)
    ready_nodes: set[str] = set()
    for node in store.list(Node):
        ready = node.status.state == NodeState.READY
        if ready:
            ready_nodes.add(node.id)
        if node.status.addr:
            table.nodes[node.id] = MeshNode(node.id, node.status.addr, ready)
    for s in store.list(Service):
        if s.pending_delete or s.endpoint is None:
            continue
        vips = {v.network_id: _bare(v.addr) for v in s.endpoint.virtual_ips if v.addr}
        ports = tuple(
            MeshPort(str(p.protocol.value if hasattr(p.protocol, "value") else p.protocol).lower(),
                     p.target_port, p.published_port,
                     str(p.publish_mode.value if hasattr(p.publish_mode, "value") else p.publish_mode).lower())
            for p in s.endpoint.ports
        )
        nets = list(vips)
        for att in s.spec.task_template.networks:
            if att.target not in nets:
                nets.append(att.target)
        tasks = []
        for t in sorted(store.tasks_by_service(s.id), key=lambda t: t.id):
            if t.desired_state != TaskState.RUNNING or t.status.state > TaskState.RUNNING or not t.node_id:
                continue
            addrs = {na.network_id: _bare(na.addresses[0]) for na in t.networks if na.addresses}
            ready = t.status.state == TaskState.RUNNING and t.node_id in ready_nodes
            tasks.append(MeshTask(t.id, t.node_id, addrs, ready))
        table.services[s.id] = MeshService(s.id, s.spec.name, vips, ports, tuple(nets), tuple(tasks))
    return table
