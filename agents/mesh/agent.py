"""The node's mesh agent: folds ``mesh`` messages into its table and programs the node to match —
overlay devices (`overlay`), the nft table (`rules`, one transaction per change, only the services
that changed), the DNS responder (`dns`) — or, where nftables cannot be used, the userspace proxy.

A backend enters the maps only once it is ready *and* this node has seen its port accept a TCP
connection (a freshly started server may not listen yet); it leaves them as soon as the manager
says so. The worker signals a stopping task only once every node has dropped it (`MeshAgent.drain`):
each applied message is acknowledged to the leader, which announces the generation every node has
applied (`agents.mesh.publisher`); a fixed delay was not enough when a busy node applied late.
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
from agents.mesh.table import Claim, MeshService, MeshTable, claimants

log = logging.getLogger(__name__)

MODE_NFT = "nftables"
MODE_PROXY = "userspace-proxy"
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 10.0
DRAIN_ORDER_S = 0.5
"""How long a stopping task waits for this node's table to drop it. The manager publishes that right
after ordering the stop; a stop it did not order (``docker stop`` on the container, leaving the swarm)
never shows there, and such a task is stopped after this delay."""
DRAIN_SETTLE_S = 0.2
"""After every node has dropped a task: time for connections balanced to it just before to be answered."""


def drain_max_s() -> float:
    """The longest a stop waits for every node to confirm (a stuck node must not hold it forever);
    ``LABAGENT_MESH_DRAIN_MAX_S``, default 3 s."""
    try:
        return max(0.0, float(os.environ.get("LABAGENT_MESH_DRAIN_MAX_S", "3")))
    except ValueError:
        return 3.0


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
        self.stream = ""
        self.gen = 0
        """The leader's stream and generation of the last table this node applied (`publisher`)."""
        self.applied_everywhere = 0
        """The newest generation of ``stream`` every node has applied, as the leader announced it."""
        self._progress = asyncio.Event()
        self._sync_ok = True
        self._claims: dict[Claim, list[str]] = {}
        self._stopped = False
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
        self._stopped = False
        ok, why = await nft_usable(self.runner)
        self.mode = MODE_NFT if ok and self.force_mode != MODE_PROXY else MODE_PROXY
        self.reason = why
        self.overlay_mode = "vxlan" if self.mode == MODE_NFT and await vxlan_usable(self.runner) else "static"
        if self.force_mode == "static":
            self.overlay_mode = "static"
        if self.mode == MODE_NFT:
            self._lab_dev = await overlay.lab_device(self.runner, self.lab_ip)
            await overlay.prepare_node(self.runner, self._lab_dev)
            if await overlay.bridged_nat(self.runner):
                self.reason = ("br_netfilter sends bridged IPv4 through the ip hooks here: a task whose VIP "
                               "picks itself is not answered")
                log.warning("mesh: %s", self.reason)
            await self.runner.nft(rules.base_script(self.lab_ip))
        self._started = True
        log.info("mesh: %s (%s overlay)%s", self.mode, self.overlay_mode, f": {why}" if why else "")

    async def stop(self, *, remove: bool = True) -> None:
        """Stop; ``remove`` (the node leaves the swarm) also deletes the table and overlay devices."""
        self._stopped = True
        self._notify()  # pending drains return
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

    async def on_message(self, msg: dict[str, Any]) -> bool:
        """Session callback for ``mesh`` messages (fold in, then program what changed; False when the
        rules could not be programmed: the session then does not acknowledge it) and ``mesh_applied``."""
        if msg.get("type") == "mesh_applied":
            if msg.get("stream") == self.stream and isinstance(msg.get("gen"), int):
                self.applied_everywhere = max(self.applied_everywhere, int(msg["gen"]))
                self._notify()
            return True
        if not self._started:
            await self.start()
        nets_before = (dict(self.table.networks), dict(self.table.nodes))
        changed = self.table.apply(msg)
        if (self.table.networks, self.table.nodes) != nets_before:
            self._nets_dirty = True
            changed |= set(self.table.services)  # networks/ingress drive every service's chains
        self._dirty |= changed | self._reassign()
        ok = await self.sync()
        stream, gen = msg.get("stream"), msg.get("gen")
        if isinstance(stream, str) and isinstance(gen, int):
            if stream != self.stream:
                self.stream, self.applied_everywhere = stream, 0  # a new leader: its own generations
            self.gen = gen
        self.applied += 1
        self._notify()
        return ok

    async def sync(self) -> bool:
        """Program what changed; False if that failed (everything is reprogrammed next time)."""
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
                self._sync_ok = False
            else:
                self._sync_ok = True
            self.last_apply_s = time.perf_counter() - t0
            if self.probe:
                self._start_probes()
            return self._sync_ok

    def _reassign(self) -> set[str]:
        """Recompute who holds each VIP and published port; the services whose holdings changed."""
        new = claimants(self.table)
        moved: set[str] = set()
        for claim in self._claims.keys() | new.keys():
            was, now = self._claims.get(claim, [None])[0], new.get(claim, [None])[0]
            if was != now:
                moved |= {sid for sid in (was, now) if sid is not None}
        for claim, sids in new.items():
            if len(sids) > 1 and self._claims.get(claim) != sids:
                log.warning("mesh: %s %s is claimed by services %s; only %s gets it", *claim, ", ".join(sids),
                            sids[0])
        self._claims = new
        return moved

    def _holder(self, claim: Claim, default: str) -> str:
        sids = self._claims.get(claim)
        return sids[0] if sids else default

    def _effective(self, svc: MeshService) -> MeshService:
        """``svc`` without the VIPs and ports another service holds (`table.owners`), and with only the
        backends this node has seen accept connections (when probing)."""
        held = {n: v for n, v in svc.vips.items() if self._holder(("vip", v), svc.id) == svc.id}
        ports = tuple(p for p in svc.ports if not (p.mode == "ingress" and p.published)
                      or self._holder(("port", f"{p.protocol}/{p.published}"), svc.id) == svc.id)
        if held != svc.vips or ports != svc.ports:
            svc = replace(svc, vips=held, ports=ports)
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
            staged[sid] = rules.service_rules(self._effective(svc), self.table) if svc is not None else None
        cmds += rules.services_diff([(self._programmed.get(sid), r) for sid, r in staged.items()])
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

    # ------------------------------------------------------------------------------------- drain

    async def drain(self, task_id: str) -> float:
        """Return once no node sends ``task_id`` new connections: the worker awaits it between a task's
        desired shutdown and its stop signal. First this node's table must drop the task (at most
        `DRAIN_ORDER_S`: a stop the manager did not order never shows there); then every node with a
        session must have applied that table (the leader's ``mesh_applied``), at most `drain_max_s` from
        the start; then `DRAIN_SETTLE_S` for connections sent to it just before. Returns the seconds
        waited. Usually tens of milliseconds plus the settle time; a busy node makes it longer."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not self._stopped and self._serves(task_id):
            if not await self._progress_until(t0 + DRAIN_ORDER_S):
                log.info("mesh: task %s stopped without the manager dropping it first", task_id)
                return loop.time() - t0
        stream, gen = self.stream, self.gen
        if not stream:  # no generations (a manager without them): the fixed delay of old
            await asyncio.sleep(max(0.0, t0 + DRAIN_ORDER_S - loop.time()))
            return loop.time() - t0
        deadline = t0 + drain_max_s()
        while not self._stopped and not (self.stream == stream and self.applied_everywhere >= gen):
            if self.stream != stream:  # a new leader sent its table: wait for that one everywhere
                stream, gen = self.stream, self.gen
                continue
            if not await self._progress_until(deadline):
                log.warning("mesh: not every node confirmed dropping task %s within %.1fs; stopping it "
                            "anyway", task_id, loop.time() - t0)
                break
        await asyncio.sleep(DRAIN_SETTLE_S)
        return loop.time() - t0

    def _serves(self, task_id: str) -> bool:
        """Is the task a backend in this node's table (the manager's view, before probing)?"""
        return any(t.id == task_id and t.ready for s in self.table.services.values() for t in s.tasks)

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _progress_until(self, deadline: float) -> bool:
        """Wait for the next applied message or announcement; False once ``deadline`` (loop time) passed."""
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            return False
        ev = self._progress
        try:
            async with asyncio.timeout(timeout):
                await ev.wait()
        except TimeoutError:
            return False
        return True

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
