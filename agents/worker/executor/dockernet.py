"""Task networking for containers a real Docker engine runs: the process executor's wiring, done from outside.

The engine creates the container with ``--network none`` (its own bridge, iptables and port mapping would
fight the routing mesh, which is ours, on nftables). Once it runs, its network namespace gets exactly what a
process task gets (`netns.TaskNetworking.wiring`): per attachment a veth whose node end is a port of the
network's bridge in the node's namespace and whose peer, created directly inside the container's namespace,
becomes ``eth<i>`` with the allocated address; loopback up and the default route via the first gateway.
Everything lives in the container's namespace, so it disappears with the container, as for process tasks.

The engine reports the container's pid in its own pid namespace. On a VM that is the agent's too; an engine
in a pid namespace of its own (the tests' private dockerd) reports another number, so the process is then
found by its ``NSpid`` chain and its cgroup (which names the container) instead.
"""

from __future__ import annotations

import os

from agents.worker.executor.rtnetlink import Rtnl

Plan = list[tuple[str, str, str, str, int]]
"""`TaskNetworking.wiring`: per ``eth<i>`` (bridge, address CIDR, gateway, node end name, MTU or 0)."""


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _is_container(pid: int, container_id: str) -> bool:
    return container_id in _read(f"/proc/{pid}/cgroup")


def task_netns(pid: int, container_id: str) -> str | None:
    """``/proc/<pid>/ns/net`` of the container's process as this process sees it; None if it is gone."""
    if pid <= 0:
        return None
    if _is_container(pid, container_id):
        return f"/proc/{pid}/ns/net"
    wanted = str(pid)
    for other in _pids():
        status = _read(f"/proc/{other}/status")
        chain = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if wanted in chain[1:] and _is_container(other, container_id):
            return f"/proc/{other}/ns/net"
    return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def wire(node_netns: str | None, netns: str, plan: Plan) -> None:
    """Give the namespace at ``netns`` its interfaces from ``plan`` (bridges exist already); blocking.
    Raises ``OSError`` (`rtnetlink.NetlinkError` with the kernel's errno) on failure."""
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with Rtnl.open_in(node_netns) as node, Rtnl.open_in(netns) as inside:
            inside.set_up(inside.link_index("lo"))
            for i, (bridge, address, _gateway, node_end, mtu) in enumerate(plan):
                node.add_veth(node_end, f"eth{i}", peer_netns_fd=fd, mtu=mtu or None, master=node.link_index(bridge))
                index = inside.link_index(f"eth{i}")
                inside.add_address(index, address)
                inside.set_up(index)
            if plan:
                inside.add_default_route(plan[0][2], inside.link_index("eth0"))
    finally:
        os.close(fd)
