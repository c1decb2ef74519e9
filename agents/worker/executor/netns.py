"""Task networking: a bridge per network on the node, a veth per task attachment into its namespace.

The task's network namespace is created by its supervisor (`shim.py` unshares it), so it lives exactly as
long as the task's processes: when they are gone the kernel destroys the namespace and both veth ends
with it -- nothing to leak, nothing to clean after a crash. The supervisor also wires it (`shim.wire`,
over netlink: `rtnetlink.py`), from a plan this module makes (`TaskNetworking.wiring`); the executor
only makes sure the bridges exist, once per bridge.

Bridges are node infrastructure (like ``docker0``): ``tasks0`` for the node-private fallback subnet
(172.18.0.0/24; the node is .1 and the default gateway), ``tn<network id[:12]>`` for each network the
manager allocated addresses on (the node takes the gateway, the subnet's first host). The mesh issue
later joins those bridges across nodes with VXLAN.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from agents.worker.executor.rtnetlink import NetlinkError, Rtnl

FALLBACK_SUBNET = "172.18.0.0/24"
FALLBACK_BRIDGE = "tasks0"
OVERLAY_MTU = 1450
"""Network bridges are joined across nodes by VXLAN (50 bytes of headers): task interfaces on them use
Docker's overlay MTU so full-size frames still fit."""


class NetworkError(Exception):
    """Wiring a task's network failed (the message names the netlink request and the kernel's error)."""


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
        (the supervisor bind-mounts it in the task's mount namespace before the program starts), or
        None to keep the node's."""

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
                await asyncio.to_thread(self._create_bridge, att)
                fut.set_result(None)
            except BaseException as e:
                del self._bridges[att.bridge]
                fut.set_exception(e)
                fut.exception()  # mark retrieved
                raise
        await asyncio.shield(fut)

    def forget_bridges(self, attachments: list[Attachment]) -> None:
        """A task could not be wired: check these bridges again next time (someone may have deleted one)."""
        for att in attachments:
            fut = self._bridges.get(att.bridge)
            if fut is not None and fut.done():
                del self._bridges[att.bridge]

    def _create_bridge(self, att: Attachment) -> None:
        """The bridge, its address and "up"; what exists already (an agent restart) is fine."""
        try:
            with Rtnl.open_in(self.node_netns) as nl:
                try:
                    nl.add_bridge(att.bridge)
                except NetlinkError as e:
                    if e.errno != errno.EEXIST:
                        raise
                index = nl.link_index(att.bridge)
                try:
                    nl.add_address(index, f"{att.gateway}/{att.prefix}")
                except NetlinkError as e:
                    if e.errno != errno.EEXIST:
                        raise
                nl.set_up(index)
        except OSError as e:
            raise NetworkError(f"bridge {att.bridge}: {e.strerror or e}") from None

    def wiring(self, container_id: str, attachments: list[Attachment]) -> list[tuple[str, str, str, str, int]]:
        """What the task's supervisor creates (`shim.wire`): per ``eth<i>`` its bridge, address, gateway,
        the host end's name (``v<short id><i>``) and the MTU (0: the kernel's default)."""
        return [
            (att.bridge, att.address, att.gateway, f"v{container_id[:12]}{i}",
             OVERLAY_MTU if att.bridge.startswith("tn") else 0)
            for i, att in enumerate(attachments)
        ]

    def resolv_text(self, attachments: list[Attachment]) -> str | None:
        """The task's ``/etc/resolv.conf`` from the mesh hook, or None to keep the node's."""
        overlay = [a.gateway for a in attachments if a.bridge.startswith("tn")]
        if self.resolv_conf is None or not overlay:
            return None
        return self.resolv_conf(overlay)
