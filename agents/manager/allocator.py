"""The allocator (leader-only control loop): network subnets, service endpoints, task addresses.

Follows SwarmKit's ``manager/allocator``. Work flows in this order, each a changeset:

1. networks: an overlay network without ``allocated`` gets a subnet (its IPAM config, else the next
   free 10.0.N.0/24), a gateway and a VXLAN id;
2. services: ``endpoint`` = the endpoint spec it was allocated for, the ports (ingress ports published,
   ``0`` auto-assigned from 30000-32767) and one virtual IP per attached network, plus one on ``ingress``
   when a port is published in ingress mode. VIPs and auto-assigned ports stay the same across updates;
3. tasks: NEW -> PENDING ("pending task scheduling") once every network they attach to has given them
   an address (ingress first when their service publishes ingress ports); the task gets a copy of the
   service endpoint (the scheduler reads host-mode ports from it). Addresses return to the pool when the
   task ends or is removed.

All allocation state is rebuilt from the store on start, so a new leader continues where the old one
stopped. A rejected changeset (someone wrote first) also triggers a rebuild: the store is the truth.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from agents.manager.batchloop import BatchingLoop
from agents.manager.ipam import (
    INGRESS_GATEWAY,
    INGRESS_SUBNET,
    VXLAN_OPTION,
    IPAMError,
    NetworkAddresses,
    SubnetPool,
    VXLANPool,
)
from agents.manager.loop import Committer, commit_tx
from agents.manager.portalloc import (
    PortAllocator,
    PortConflictError,
    PortExhaustedError,
    check_ports,
)
from agents.manager.shallow import cloner
from agents.state.objects import (
    Driver,
    Endpoint,
    IPAMConfig,
    Network,
    NetworkAllocation,
    NetworkAttachment,
    NetworkSpec,
    PublishMode,
    ResolutionMode,
    Service,
    ServiceSpec,
    Task,
    TaskState,
    TaskStatus,
    VirtualIP,
)
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import Event, EventAction

__all__ = [
    "ALLOCATED_MESSAGE",
    "Allocator",
    "PortConflictError",
    "check_ports",
    "ensure_ingress",
    "needs_ingress",
]

log = logging.getLogger(__name__)

ALLOCATED_MESSAGE = "pending task scheduling"
MAX_CHANGESET_TASKS = 5_000
INGRESS_NAME = "ingress"

_NEW, _RUNNING = TaskState.NEW, TaskState.RUNNING
_NETWORK, _SERVICE, _TASK = Network.KIND, Service.KIND, Task.KIND


class AllocationError(Exception):
    pass


def ensure_ingress(tx: Tx) -> Network | None:
    """Create Docker's default ``ingress`` network (overlay, 10.0.0.0/24) unless an ingress network
    exists; the manager calls this once when it initialises a cluster. Returns the created network."""
    if any(n.spec.ingress for n in tx.list(Network)):
        return None
    spec = NetworkSpec(
        name=INGRESS_NAME,
        driver="overlay",
        ingress=True,
        ipam=[IPAMConfig(subnet=INGRESS_SUBNET, gateway=INGRESS_GATEWAY)],
    )
    return tx.create(Network(spec=spec))


def needs_ingress(spec: ServiceSpec) -> bool:
    """A port published in ingress mode puts the service on the routing mesh (SwarmKit:
    ``IsIngressNetworkNeeded``)."""
    return any(p.publish_mode == PublishMode.INGRESS for p in spec.endpoint_spec.ports)


def _has_ipam(n: Network) -> bool:
    return n.spec.driver in ("overlay", "")


_task_with: Callable[[Task, list[NetworkAttachment], Endpoint | None, TaskStatus], Task] = cloner(
    Task, "networks", "endpoint", "status"
)
"""A new Task differing in the allocated fields (shallow, see ``shallow``)."""


class Allocator(BatchingLoop):
    name = "allocator"
    kinds = (Network, Service, Task)

    def __init__(
        self,
        store: Store,
        committer: Committer,
        *,
        batch_window: float = 0.05,
        max_latency: float = 1.0,
        max_changeset: int = MAX_CHANGESET_TASKS,
        queue_size: int = 1_000_000,
    ) -> None:
        super().__init__(
            store, committer, batch_window=batch_window, max_latency=max_latency, queue_size=queue_size
        )
        self.max_changeset = max_changeset
        self._reset()

    def _reset(self) -> None:
        self.subnets = SubnetPool()
        self.vxlans = VXLANPool()
        self.nets: dict[str, NetworkAddresses] = {}
        """Allocated networks that hand out addresses."""
        self.allocated_nets: set[str] = set()
        self.ingress_id: str | None = None
        self.ports = PortAllocator()
        self.vips: dict[str, list[VirtualIP]] = {}
        self.task_addrs: dict[str, list[tuple[str, str]]] = {}
        self.pending_networks: dict[str, None] = {}
        self.pending_services: dict[str, None] = {}
        self.pending_tasks: dict[str, None] = {}

    # ------------------------------------------------------------------------------------ view

    def rebuild(self) -> None:
        """Read every allocation back from the store (start, new leader, fell behind, rejection)."""
        self._reset()
        for n in self.store.list(Network):
            self._on_network(n)
        for s in self.store.list(Service):
            self._on_service(s)
        for t in self.store.list(Task):
            self._on_task(t)

    def handle(self, ev: Event) -> bool:
        removed = ev.action is EventAction.REMOVED
        obj = ev.obj
        if ev.kind == _TASK:
            assert isinstance(obj, Task)
            if removed:
                self.pending_tasks.pop(obj.id, None)
                return self._release_task(obj.id)
            return self._on_task(obj)
        if ev.kind == _SERVICE:
            assert isinstance(obj, Service)
            if removed:
                self._release_service(obj.id)
                return True
            return self._on_service(obj)
        if ev.kind == _NETWORK:
            assert isinstance(obj, Network)
            if removed:
                self._release_network(obj.id)
                return True
            return self._on_network(obj)
        return False

    def _on_network(self, n: Network) -> bool:
        if n.spec.ingress and self.ingress_id is None:
            self.ingress_id = n.id
        if n.allocated is None:
            self.pending_networks[n.id] = None
            return True
        self.pending_networks.pop(n.id, None)
        if n.id in self.allocated_nets:
            return False
        self._take_network(n, n.allocated)
        return True

    def _take_network(self, n: Network, a: NetworkAllocation) -> None:
        self.allocated_nets.add(n.id)
        vni = a.driver_state.options.get(VXLAN_OPTION, "")
        if vni.isdigit():
            self.vxlans.take(int(vni), n.id)
        if not a.subnet:
            return
        subnet = ipaddress.ip_network(a.subnet, strict=False)
        self.subnets.take(n.id, subnet)
        ip_range = n.spec.ipam[0].ip_range if n.spec.ipam else ""
        self.nets[n.id] = NetworkAddresses(subnet, a.gateway, ip_range)

    def _release_network(self, nid: str) -> None:
        self.pending_networks.pop(nid, None)
        self.allocated_nets.discard(nid)
        self.nets.pop(nid, None)
        self.subnets.release(nid)
        self.vxlans.release_network(nid)
        if self.ingress_id == nid:
            self.ingress_id = None

    def _on_service(self, s: Service) -> bool:
        if self._service_allocated(s):
            self.pending_services.pop(s.id, None)
            self._take_service(s)
            return bool(self.pending_tasks)
        self.pending_services[s.id] = None
        return True

    def _take_service(self, s: Service) -> None:
        """Make the in-memory view hold exactly what ``s.endpoint`` says."""
        ep = s.endpoint
        assert ep is not None
        self.ports.set_service(s.id, ep.ports)
        owner = "vip:" + s.id
        new = list(ep.virtual_ips)
        keep = {(v.network_id, v.addr) for v in new}
        for v in self.vips.get(s.id, ()):
            if (v.network_id, v.addr) not in keep:
                self._release_addr(v.network_id, v.addr, owner)
        for v in new:
            pool = self.nets.get(v.network_id)
            if pool is not None and not pool.reserve(v.addr, owner):
                log.warning("VIP %s of service %s is held by someone else", v.addr, s.id)
        self.vips[s.id] = new

    def _release_service(self, sid: str) -> None:
        self.pending_services.pop(sid, None)
        self.ports.release_service(sid)
        for v in self.vips.pop(sid, ()):
            self._release_addr(v.network_id, v.addr, "vip:" + sid)

    def _on_task(self, t: Task) -> bool:
        state = t.status.state
        if state > _RUNNING:
            self.pending_tasks.pop(t.id, None)
            return self._release_task(t.id)
        if state == _NEW:
            self.pending_tasks[t.id] = None
            return True
        self.pending_tasks.pop(t.id, None)
        if t.id not in self.task_addrs and t.networks:
            held: list[tuple[str, str]] = []
            for att in t.networks:
                pool = self.nets.get(att.network_id)
                for addr in att.addresses:
                    if pool is not None and pool.reserve(addr, t.id):
                        held.append((att.network_id, addr))
            self.task_addrs[t.id] = held
        return False

    def _release_task(self, tid: str) -> bool:
        held = self.task_addrs.pop(tid, None)
        if not held:
            return False
        for nid, addr in held:
            self._release_addr(nid, addr, tid)
        return bool(self.pending_tasks or self.pending_services)

    def _release_addr(self, nid: str, addr: str, owner: str) -> None:
        pool = self.nets.get(nid)
        if pool is not None:
            pool.release(addr, owner)

    # ---------------------------------------------------------------------------------- lookups

    def _resolve(self, target: str) -> Network | None:
        n = self.store.get(Network, target)
        if n is None:
            named = self.store.by_name(Network, target)
            n = named[0] if named and isinstance(named[0], Network) else None
        return n

    def _vip_networks(self, s: Service) -> list[str] | None:
        """Networks the service needs a VIP on (ingress first); None if one is missing."""
        if s.spec.endpoint_spec.mode == ResolutionMode.DNSRR:
            return []
        out: list[str] = []
        if needs_ingress(s.spec):
            if self.ingress_id is None:
                return None
            out.append(self.ingress_id)
        for cfg in s.spec.task_template.networks:
            n = self._resolve(cfg.target)
            if n is None:
                return None
            if _has_ipam(n) and n.id not in out:
                out.append(n.id)
        return out

    def _service_allocated(self, s: Service) -> bool:
        ep, es = s.endpoint, s.spec.endpoint_spec
        if ep is None or ep.spec != es or len(ep.ports) != len(es.ports):
            return False
        want = self._vip_networks(s)
        have = [v.network_id for v in ep.virtual_ips]
        return want is not None and len(want) == len(have) and set(want) == set(have)

    # ------------------------------------------------------------------------------- allocation

    def allocate_network(self, n: Network) -> Network:
        """A copy of ``n`` with ``allocated`` filled in (and the in-memory pools updated)."""
        out = n.copy()
        if not _has_ipam(n):
            out.allocated = NetworkAllocation(driver_state=Driver(name=n.spec.driver))
            self.allocated_nets.add(n.id)
            return out
        cfg = n.spec.ipam[0] if n.spec.ipam else IPAMConfig()
        if cfg.subnet:
            try:
                subnet = ipaddress.ip_network(cfg.subnet, strict=False)
            except ValueError as e:
                raise IPAMError(f"invalid subnet {cfg.subnet}: {e}") from None
            if self.subnets.overlapping(subnet, n.id) is not None:
                raise IPAMError("invalid pool request: Pool overlaps with other one on this address space")
        else:
            subnet = self.subnets.next_free()
        gateway = cfg.gateway or str(ipaddress.ip_address(int(subnet.network_address) + 1))
        vni = self.vxlans.allocate(n.id)
        out.allocated = NetworkAllocation(
            driver_state=Driver(name="overlay", options={VXLAN_OPTION: str(vni)}),
            subnet=str(subnet),
            gateway=gateway,
        )
        self._take_network(n, out.allocated)
        return out

    def allocate_service(self, s: Service) -> Service:
        """A copy of ``s`` with its endpoint allocated; raises (changing nothing) when it cannot be."""
        want = self._vip_networks(s)
        if want is None:
            raise AllocationError(f"service {s.id}: a network it attaches to (or ingress) is missing")
        for nid in want:
            if nid not in self.nets:
                raise AllocationError(f"service {s.id}: network {nid} is not allocated yet")
        owner = "vip:" + s.id
        old = {v.network_id: v for v in (s.endpoint.virtual_ips if s.endpoint else [])}
        old.update({v.network_id: v for v in self.vips.get(s.id, ())})
        vips: list[VirtualIP] = []
        fresh: list[tuple[str, str]] = []
        es = s.spec.endpoint_spec
        try:
            for nid in want:
                pool = self.nets[nid]
                prev = old.get(nid)
                if prev is not None and pool.reserve(prev.addr, owner):
                    vips.append(VirtualIP(network_id=nid, addr=prev.addr))
                    continue
                addr = pool.allocate(owner)
                fresh.append((nid, addr))
                vips.append(VirtualIP(network_id=nid, addr=addr))
            ports = self.ports.allocate(s.id, es.ports, s.endpoint)
        except Exception:
            for nid, addr in fresh:
                self._release_addr(nid, addr, owner)
            raise
        keep = {(v.network_id, v.addr) for v in vips}
        for v in old.values():
            if (v.network_id, v.addr) not in keep:
                self._release_addr(v.network_id, v.addr, owner)
        self.vips[s.id] = vips
        out = s.copy()
        out.endpoint = Endpoint(spec=es.copy(), ports=ports, virtual_ips=vips)
        return out

    def allocate_task(self, t: Task, svc: Service | None, now: float) -> Task | None:
        """``t`` moved to PENDING with its addresses, or None if it must wait for a network (missing or
        not allocated yet); raises ``IPAMError`` (holding nothing) when a network is full."""
        targets: list[tuple[str, list[str]]] = []
        if svc is not None and needs_ingress(svc.spec):
            if self.ingress_id is None:
                return None
            targets.append((self.ingress_id, []))
        for cfg in t.spec.networks:
            n = self._resolve(cfg.target)
            if n is None or n.id not in self.allocated_nets:
                return None
            if all(n.id != nid for nid, _ in targets):
                targets.append((n.id, cfg.aliases))
        atts: list[NetworkAttachment] = []
        held: list[tuple[str, str]] = []
        try:
            for nid, aliases in targets:
                pool = self.nets.get(nid)
                addrs = [pool.allocate(t.id)] if pool is not None else []
                held.extend((nid, a) for a in addrs)
                atts.append(NetworkAttachment(network_id=nid, addresses=addrs, aliases=list(aliases)))
        except IPAMError:
            for nid, addr in held:
                self._release_addr(nid, addr, t.id)
            raise
        if held:
            self.task_addrs[t.id] = held
        endpoint = svc.endpoint if svc is not None else t.endpoint
        status = TaskStatus(timestamp=now, state=TaskState.PENDING, message=ALLOCATED_MESSAGE)
        return _task_with(t, atts, endpoint, status)

    # ------------------------------------------------------------------------------------ pass

    async def tick(self) -> None:
        if self.pending_networks and not await self._commit(self._networks_tx()):
            return
        if self.pending_services and not await self._commit(self._services_tx()):
            return
        if not self.pending_tasks:
            return
        now = self.store.clock()
        ready: dict[str, Service | None] = {}
        ids = list(self.pending_tasks)
        step = self.max_changeset
        for i in range(0, len(ids), step):
            if not await self._commit(self.tasks_tx(ids[i : i + step], now, ready)):
                return

    async def _commit(self, tx: Tx) -> bool:
        result = await commit_tx(self.committer, tx)
        if result is not None and not result.ok:
            log.info("allocator changeset rejected (%s); rebuilding from the store", result.error)
            self.resync()
            return False
        return True

    def _networks_tx(self) -> Tx:
        nets = [self.store.get(Network, nid) for nid in self.pending_networks]
        todo = [n for n in nets if n is not None and n.allocated is None]
        # Explicit subnets first, so an automatic pick never takes a range someone asked for.
        todo.sort(key=lambda n: not (n.spec.ipam and n.spec.ipam[0].subnet))
        self.pending_networks = {}
        with self.store.batch() as tx:
            for n in todo:
                try:
                    tx.update(self.allocate_network(n))
                except IPAMError as e:
                    log.warning("network %s (%s): %s", n.spec.name, n.id, e)
                    self.pending_networks[n.id] = None
        return tx

    def _services_tx(self) -> Tx:
        with self.store.batch() as tx:
            for sid in list(self.pending_services):
                s = self.store.get(Service, sid)
                if s is None:
                    del self.pending_services[sid]
                    continue
                if self._service_allocated(s):
                    del self.pending_services[sid]
                    self._take_service(s)
                    continue
                try:
                    tx.update(self.allocate_service(s))
                except (AllocationError, IPAMError, PortConflictError, PortExhaustedError) as e:
                    log.warning("service %s (%s): %s", s.spec.name, s.id, e)
                    continue
                del self.pending_services[sid]
        return tx

    def tasks_tx(self, ids: list[str], now: float, ready: dict[str, Service | None]) -> Tx:
        """Allocate the NEW tasks among ``ids`` whose service and networks are ready."""
        get, pending = self.store.get, self.pending_tasks
        full: IPAMError | None = None
        waiting = 0
        with self.store.batch() as tx:
            for tid in ids:
                t = get(Task, tid)
                if t is None or t.status.state != _NEW:
                    pending.pop(tid, None)
                    continue
                svc: Service | None = None
                if t.service_id:
                    if t.service_id not in ready:
                        s = get(Service, t.service_id)
                        ok = (
                            s is not None and s.id not in self.pending_services and self._service_allocated(s)
                        )
                        ready[t.service_id] = s if ok else None
                    svc = ready[t.service_id]
                    if svc is None:
                        continue
                try:
                    new = self.allocate_task(t, svc, now)
                except IPAMError as e:
                    full, waiting = e, waiting + 1
                    continue
                if new is None:
                    continue
                pending.pop(tid, None)
                tx.update(new)
        if full is not None:
            log.warning("%d tasks wait for addresses: %s", waiting, full)
        return tx
