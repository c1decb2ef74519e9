"""The node's mesh agent: folds ``mesh`` messages into its table and programs the node to match —
overlay devices (`overlay`), the nft table (`rules`, one transaction per change, only the services
that changed), the DNS responder (`dns`) — or, where nftables cannot be used, the userspace proxy.

A backend enters the maps only once it is ready *and* this node has seen its port accept a TCP
connection (a freshly started server may not listen yet); it leaves them as soon as the manager
says so, which happens before the worker signals it (the worker's drain delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from dataclasses import replace
from typing import Any

from agents.mesh import overlay, rules
from agents.mesh.commands import CommandError, Runner, nft_usable, vxlan_usable
from agents.mesh.dns import DNSServer
from agents.mesh.proxy import Backends, ProxySet
from agents.mesh.table import MeshService, MeshTable

log = logging.getLogger(__name__)

MODE_NFT = "nftables"
MODE_PROXY = "userspace-proxy"
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 10.0


def drain_delay_s() -> float:
    """How long a worker waits between "desired shutdown" and signalling a task, so every node has
    dropped it from its maps first (2x the mesh's propagation bound; ``LABAGENT_MESH_DRAIN_S``)."""
    try:
        return max(0.0, float(os.environ.get("LABAGENT_MESH_DRAIN_S", "0.5")))
    except ValueError:
        return 0.5


class MeshAgent:
    def __init__(self, node_id: str, lab_ip: str, *, runner: Runner | None = None, dns_port: int = 53,
                 probe: bool = True, force_mode: str | None = None) -> None:
        self.node_id = node_id
        self.lab_ip = lab_ip
        self.runner = runner or Runner()
        self.probe = probe
        self.force_mode = force_mode
        self.mode = ""
        """``nftables`` or ``userspace-proxy`` once started."""
        self.overlay_mode = ""
        """``vxlan`` or ``static``."""
        self.reason = ""
        self.table = MeshTable()
        self.applied = 0
        """Messages applied (tests wait on it)."""
        self.last_apply_s = 0.0
        self._programmed: dict[str, rules.ServiceRules] = {}
        self._programmed_nets: MeshTable | None = None
        self._overlay = overlay.OverlayState()
        self._lab_dev = "eth0"
        self._probed: set[tuple[str, str]] = set()
        self._probing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._nets_dirty = True
        self._lock = asyncio.Lock()
        self._dns = DNSServer(lambda: self.table, dns_port)
        self._proxy = ProxySet()
        self._started = False

    # ------------------------------------------------------------------------------------- life

    async def start(self) -> None:
        if self._started:
            return
        ok, why = await nft_usable(self.runner)
        self.mode = MODE_NFT if ok and self.force_mode != MODE_PROXY else MODE_PROXY
        self.reason = why
        self.overlay_mode = "vxlan" if self.mode == MODE_NFT and await vxlan_usable(self.runner) else "static"
        if self.force_mode == "static":
            self.overlay_mode = "static"
        if self.mode == MODE_NFT:
            self._lab_dev = await overlay.lab_device(self.runner, self.lab_ip)
            await overlay.prepare_node(self.runner)
            if await overlay.bridged_nat(self.runner):
                self.reason = ("br_netfilter sends bridged IPv4 through the ip hooks here: a task whose VIP "
                               "picks itself is not answered")
                log.warning("mesh: %s", self.reason)
            await self.runner.nft(rules.base_script(self.lab_ip))
        self._started = True
        log.info("mesh: %s (%s overlay)%s", self.mode, self.overlay_mode, f": {why}" if why else "")

    async def stop(self, *, remove: bool = True) -> None:
        """Stop; ``remove`` (the node leaves the swarm) also deletes the table and overlay devices."""
        for t in self._probing.values():
            t.cancel()
        self._dns.close()
        await self._proxy.close()
        if remove and self.mode == MODE_NFT:
            with contextlib.suppress(CommandError, OSError):
                await self.runner.nft(rules.delete_script())
            with contextlib.suppress(CommandError, OSError):
                await overlay.teardown(self.runner, self._overlay)
        self._started = False

    def info(self) -> dict[str, Any]:
        return {"Mode": self.mode or "off", "Overlay": self.overlay_mode, "Services": len(self.table.services),
                "Nft": self.runner.nft_backend if self.mode == MODE_NFT else "", "Reason": self.reason}

    # ---------------------------------------------------------------------------------- messages

    async def on_message(self, msg: dict[str, Any]) -> None:
        """Session callback for ``mesh`` messages: fold in, then program what changed."""
        if not self._started:
            await self.start()
        nets_before = (dict(self.table.networks), dict(self.table.nodes))
        changed = self.table.apply(msg)
        if (self.table.networks, self.table.nodes) != nets_before:
            self._nets_dirty = True
            changed |= set(self.table.services)  # networks/ingress drive every service's chains
        self._dirty |= changed
        await self.sync()
        self.applied += 1

    async def sync(self) -> None:
        async with self._lock:
            t0 = time.perf_counter()
            dirty, self._dirty = self._dirty, set()
            nets_dirty, self._nets_dirty = self._nets_dirty, False
            try:
                if self.mode == MODE_NFT:
                    await self._sync_nft(dirty, nets_dirty)
                else:
                    await self._sync_proxy()
            except (CommandError, OSError) as e:
                log.error("mesh: programming failed: %s; reprogramming everything next time", e)
                self._dirty |= set(self.table.services) | set(self._programmed)
                self._nets_dirty = True
                self._programmed_nets = None
            self.last_apply_s = time.perf_counter() - t0
            if self.probe:
                self._start_probes()

    def _effective(self, svc: MeshService) -> MeshService:
        """``svc`` with only the backends this node has seen accept connections (when probing)."""
        if not self.probe:
            return svc
        port = _probe_port(svc)
        if port is None:
            return svc
        tasks = tuple(t if not t.ready or (t.id, _addr(t.addrs)) in self._probed else replace(t, ready=False)
                      for t in svc.tasks)
        return replace(svc, tasks=tasks)

    async def _sync_nft(self, dirty: set[str], nets_dirty: bool) -> None:
        cmds: list[str] = []
        if nets_dirty:
            new = overlay.desired(self.table, self.node_id, self.lab_ip, self.overlay_mode)
            await overlay.apply(self.runner, self._overlay, new, self.lab_ip, self._lab_dev, self.overlay_mode)
            if self._programmed_nets is None and self._programmed:
                # after a failure: rebuild the table from nothing
                cmds += rules.base_script(self.lab_ip)
                self._programmed = {}
            cmds += rules.networks_script(self._programmed_nets, self.table)
            self._programmed_nets = MeshTable(networks=dict(self.table.networks), nodes=dict(self.table.nodes))
            await self._dns.update({n.id: n.gateway for n in self.table.networks.values()})
        elif self.overlay_mode == "static" or dirty:
            new = overlay.desired(self.table, self.node_id, self.lab_ip, self.overlay_mode)
            if new.vips != self._overlay.vips or new.routes != self._overlay.routes:
                await overlay.apply(self.runner, self._overlay, new, self.lab_ip, self._lab_dev, self.overlay_mode)
        else:
            new = self._overlay
        staged: dict[str, rules.ServiceRules | None] = {}
        for sid in sorted(dirty):
            svc = self.table.services.get(sid)
            r = rules.service_rules(self._effective(svc), self.table) if svc is not None else None
            cmds += rules.service_diff(self._programmed.get(sid), r)
            staged[sid] = r
        await self.runner.nft(cmds)
        self._overlay = new
        for sid, r in staged.items():
            if r is None:
                self._programmed.pop(sid, None)
            else:
                self._programmed[sid] = r

    async def _sync_proxy(self) -> None:
        ports: dict[int, Backends] = {}
        for sid, s in self.table.services.items():
            for p in s.ports:
                if p.protocol == "tcp" and p.mode == "ingress" and p.published:
                    ports[p.published] = functools.partial(self._proxy_backends, sid, p.target)
        await self._proxy.update(ports)
        await self._dns.update({n.id: n.gateway for n in self.table.networks.values()})

    def _proxy_backends(self, sid: str, target: int) -> list[tuple[str, int]]:
        s = self.table.services.get(sid)
        if s is None:
            return []
        return [(_addr(t.addrs), target) for t in self._effective(s).backends()]

    # ------------------------------------------------------------------------------------ probes

    def _start_probes(self) -> None:
        live: set[tuple[str, str]] = set()
        for s in self.table.services.values():
            port = _probe_port(s)
            if port is None:
                continue
            for t in s.tasks:
                key = (t.id, _addr(t.addrs))
                if not t.ready:
                    continue
                live.add(key)
                if key not in self._probed and key not in self._probing:
                    self._probing[key] = asyncio.get_running_loop().create_task(self._probe(s.id, key, port))
        self._probed &= live
        for key in [k for k in self._probing if k not in live]:
            self._probing.pop(key).cancel()

    async def _probe(self, sid: str, key: tuple[str, str], port: int) -> None:
        """Wait until the backend accepts a TCP connection (from this node's lab address, so the reply
        routes back here), then let it into the maps. Gives up waiting after ``PROBE_TIMEOUT_S``."""
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if await _tcp_ok(key[1], port, self.lab_ip if self.mode == MODE_NFT else None):
                    break
                await asyncio.sleep(PROBE_INTERVAL_S)
            self._probed.add(key)
            self._dirty.add(sid)
            await self.sync()
        finally:
            if self._probing.get(key) is asyncio.current_task():
                del self._probing[key]

    # ---------------------------------------------------------------------------------------- dns

    def resolv_conf(self, gateways: list[str]) -> str | None:
        """The ``/etc/resolv.conf`` a task gets: this node's responder on its first network's gateway."""
        if not gateways or not self._started:
            return None
        return f"nameserver {gateways[0]}\noptions ndots:0\n"


def _addr(addrs: dict[str, str]) -> str:
    return next(iter(sorted(addrs.items())))[1] if addrs else ""


def _probe_port(s: MeshService) -> int | None:
    return next((p.target for p in s.ports if p.protocol == "tcp"), None)


async def _tcp_ok(host: str, port: int, source: str | None) -> bool:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if source:
            with contextlib.suppress(OSError):
                sock.bind((source, 0))
        async with asyncio.timeout(0.5):
            await loop.sock_connect(sock, (host, port))
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()
