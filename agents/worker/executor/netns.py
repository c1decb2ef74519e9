"""Task networking: a bridge per network on the node, a veth per task attachment into its namespace.

The task's network namespace is created by its supervisor (`shim.py` unshares it), so it lives exactly as
long as the task's processes: when they are gone the kernel destroys the namespace and both veth ends
with it -- nothing to leak, nothing to clean after a crash. While the supervisor waits for ``go``, the
executor wires it from outside with two ``ip -batch`` runs (one in the node's namespace, one in the
task's, entered through ``/proc/<pid>/ns/net``).

Bridges are node infrastructure (like ``docker0``): ``tasks0`` for the node-private fallback subnet
(172.18.0.0/24; the node is .1 and the default gateway), ``tn<network id[:12]>`` for each network the
manager allocated addresses on (the node takes the gateway, the subnet's first host). The mesh issue
later joins those bridges across nodes with VXLAN.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FALLBACK_SUBNET = "172.18.0.0/24"
FALLBACK_BRIDGE = "tasks0"
OVERLAY_MTU = 1450
"""Network bridges are joined across nodes by VXLAN (50 bytes of headers): task interfaces on them use
Docker's overlay MTU so full-size frames still fit."""


class NetworkError(Exception):
    """Wiring a task's network failed (the message is ``ip``'s)."""


@dataclass(frozen=True)
class Attachment:
    """One interface of a task: ``eth<index>`` with ``address`` (CIDR) on ``bridge``."""

    bridge: str
    address: str
    gateway: str
    """The node's address on the bridge (no prefix)."""

    @property
    def prefix(self) -> int:
        return ipaddress.ip_interface(self.address).network.prefixlen


def bridge_name(network_id: str) -> str:
    return f"tn{network_id[:12]}"


def attachment_for(network_id: str, address: str) -> Attachment:
    iface = ipaddress.ip_interface(address)
    gateway = str(iface.network.network_address + 1)
    return Attachment(bridge_name(network_id), address, gateway)


async def run_ip(commands: list[str], netns: str | None = None, *, force: bool = False) -> None:
    """Run ``ip -batch -`` with ``commands``, inside ``netns`` (a path like /proc/PID/ns/net) if given."""
    argv = ["ip", *(["-force"] if force else []), "-batch", "-"]
    if netns is not None:
        argv = ["nsenter", f"--net={netns}", *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate("\n".join(commands).encode() + b"\n")
    if proc.returncode != 0 and not force:
        raise NetworkError(err.decode(errors="replace").strip() or f"ip exited {proc.returncode}")


class TaskNetworking:
    """Bridges of one node plus the per-task wiring. ``node_netns`` None = the agent's own namespace."""

    def __init__(
        self, node_netns: str | None = None, fallback_subnet: str = FALLBACK_SUBNET, fallback_bridge: str = FALLBACK_BRIDGE
    ) -> None:
        self.node_netns = node_netns
        self.fallback = ipaddress.ip_network(fallback_subnet)
        self.fallback_bridge = fallback_bridge
        self._bridges: dict[str, asyncio.Future[None]] = {}
        self.resolv_conf: Callable[[list[str]], str | None] | None = None
        """The routing mesh's DNS: gateways of a task's network attachments -> its /etc/resolv.conf
        (bind-mounted in the task's mount namespace before it starts), or None to keep the node's."""

    def fallback_attachment(self, used: set[str]) -> Attachment:
        """The lowest free address of the node-private subnet (``used``: addresses without prefix)."""
        gateway = str(self.fallback.network_address + 1)
        for host in self.fallback.hosts():
            addr = str(host)
            if addr != gateway and addr not in used:
                return Attachment(self.fallback_bridge, f"{addr}/{self.fallback.prefixlen}", gateway)
        raise NetworkError(f"no free address in {self.fallback}")

    async def ensure_bridge(self, att: Attachment) -> None:
        """Create the bridge with the node's gateway address once (concurrent callers share the work)."""
        fut = self._bridges.get(att.bridge)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._bridges[att.bridge] = fut
            try:
                await run_ip(
                    [
                        f"link add {att.bridge} type bridge",
                        f"addr add {att.gateway}/{att.prefix} dev {att.bridge}",
                        f"link set {att.bridge} up",
                    ],
                    self.node_netns,
                    force=True,  # "File exists" after an agent restart is fine
                )
                await run_ip([f"link set {att.bridge} up"], self.node_netns)
                fut.set_result(None)
            except BaseException as e:
                del self._bridges[att.bridge]
                fut.set_exception(e)
                fut.exception()  # mark retrieved
                raise
        await asyncio.shield(fut)

    async def attach(self, pid: int, container_id: str, attachments: list[Attachment]) -> None:
        """Give the namespace of ``pid`` its interfaces (eth0..), addresses, loopback and default route."""
        for att in attachments:
            await self.ensure_bridge(att)
        outside = []
        inside = ["link set lo up"]
        for i, att in enumerate(attachments):
            host_end = f"v{container_id[:12]}{i}"
            mtu = f" mtu {OVERLAY_MTU}" if att.bridge.startswith("tn") else ""
            outside += [
                f"link add {host_end}{mtu} type veth peer name eth{i}{mtu} netns {pid}",
                f"link set {host_end} master {att.bridge} up",
            ]
            inside += [f"addr add {att.address} dev eth{i}", f"link set eth{i} up"]
        if attachments:
            inside.append(f"route add default via {attachments[0].gateway} dev eth0")
        await run_ip(outside, self.node_netns)
        await run_ip(inside, f"/proc/{pid}/ns/net")
        overlay = [a.gateway for a in attachments if a.bridge.startswith("tn")]
        text = self.resolv_conf(overlay) if self.resolv_conf is not None and overlay else None
        if text:
            await _bind_resolv_conf(pid, text)


async def _bind_resolv_conf(pid: int, text: str) -> None:
    """Give the task (its mount namespace, private since the shim unshared it) its own resolv.conf."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", "sh", "-c",
        "cat > /run/resolv.conf && mount --bind /run/resolv.conf /etc/resolv.conf",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(text.encode())
    if proc.returncode != 0:
        log.warning("task %d: could not set resolv.conf: %s", pid, err.decode(errors="replace").strip())
