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

Service endpoints are also allocated *inline*, by the API's create/update changeset (``endpoint_inline``):
the service is written once, with its VIPs and auto-assigned ports already in it, so the version a client
reads right after ``docker service create -d`` stays current and its ``scale`` is not "out of sequence"
(the loop used to write the service again a moment later). The API picks the service id first, so the
reservations have their real owner. Until that changeset is through, its reservations are *in flight*:
held in this view (old and new ones of an update) across rebuilds and events, never handed to another
service; a refused changeset releases them; one whose outcome is unknown (no quorum) keeps them until
the store shows it committed or that it never can (or this leader's loops stop).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from agents.manager.batchloop import BatchingLoop
from agents.manager.errors import ManagerError
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
    PortKey,
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
    "active_allocator",
    "check_ports",
    "endpoint_inline",
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


@dataclass
class InFlight:
    """What an API changeset not yet through holds for one service (see the module docstring)."""

    vips: set[tuple[str, str]] = field(default_factory=set)
    """(network id, address) pairs, owner ``vip:<service id>``."""
    ports: set[PortKey] = field(default_factory=set)
    writers: int = 0
    """API requests still waiting for their changeset's outcome."""
    unknown: list[int] = field(default_factory=list)
    """Versions the proposals of unknown outcome expect (0: a create); held until each is decided."""


_WAKE = Event(EventAction.UPDATED, Service.KIND, Service())
"""Pushed into the loop's own watch queue to wake it: work found by ``catch_up`` needs a pass."""

_LIVE: weakref.WeakKeyDictionary[Store, Allocator] = weakref.WeakKeyDictionary()
"""The allocator running on each store (the leader's), for the API's inline allocation."""


def active_allocator(store: Store) -> Allocator | None:
    """The allocator loop running on ``store``, if this manager leads and its view is live."""
    alloc = _LIVE.get(store)
    return alloc if alloc is not None and alloc.view_live else None


@contextlib.contextmanager
def endpoint_inline(store: Store, s: Service) -> Iterator[Service]:
    """``with endpoint_inline(store, svc) as svc:`` build and commit the create/update of ``svc``.

    Yields a copy of ``svc`` (its id must be final) with its endpoint allocated by the leader's
    allocator, or ``svc`` itself when there is nothing to allocate or it cannot be done now (no
    allocator, a network not allocated yet, no free port): the loop then does it as before. The
    reservations are held until the block ends; a block ending in an error other than a manager error
    (the changeset was refused) releases them, a manager error (outcome unknown) keeps them until the
    store decides. ``svc.meta.version`` is the version the write expects (0 for a create)."""
    alloc = active_allocator(store)
    out = alloc.reserve_endpoint(s) if alloc is not None else None
    if alloc is None or out is None:
        yield s
        return
    try:
        yield out
    except ManagerError:
        alloc.finish_in_flight(s.id, unknown=s.meta.version)
        raise
    except Exception:
        alloc.finish_in_flight(s.id)
        raise
    except BaseException:  # cancelled: the proposal may still commit
        alloc.finish_in_flight(s.id, unknown=s.meta.version)
        raise
    alloc.finish_in_flight(s.id)


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
        self.in_flight: dict[str, InFlight] = {}
        """Service id -> reservations of API changesets not yet through; survives rebuilds."""
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

    async def run(self) -> None:
        _LIVE[self.store] = self
        try:
            await super().run()
        finally:
            if _LIVE.get(self.store) is self:
                del _LIVE[self.store]

    @property
    def view_live(self) -> bool:
        """Rebuilt and following the store's events (not between a dropped watch and its rebuild)."""
        q = self._queue
        return q is not None and not q.closed

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
        for sid in list(self.in_flight):
            self._hold_in_flight(sid)
            self._decide_unknown(sid, seen=False)

    def handle(self, ev: Event) -> bool:
        if ev is _WAKE:
            return True
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
            if obj.id in self.in_flight:
                self._decide_unknown(obj.id, seen=True)
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
            return bool(self.pending_tasks or self.pending_services)  # it may have freed ports or VIPs
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
        self._hold_in_flight(s.id)

    def _release_service(self, sid: str) -> None:
        self.pending_services.pop(sid, None)
        self.ports.release_service(sid)
        for v in self.vips.pop(sid, ()):
            self._release_addr(v.network_id, v.addr, "vip:" + sid)
        self._hold_in_flight(sid)

    # ---------------------------------------------------------------------- inline (API) allocation

    def reserve_endpoint(self, s: Service) -> Service | None:
        """A copy of ``s`` with its endpoint allocated, its reservations held in flight until
        ``finish_in_flight(s.id)``; None when nothing is to allocate or it cannot be done now."""
        if not s.id:
            raise ValueError("a service's id must be chosen before its endpoint is allocated (the owner)")
        if not self.view_live:
            return None
        self.catch_up()
        if self._service_allocated(s):
            return None
        sid = s.id
        before_vips = {(v.network_id, v.addr) for v in self.vips.get(sid, ())}
        before_ports = self.ports.held(sid)
        try:
            out = self.allocate_service(s)
        except (AllocationError, IPAMError, PortConflictError, PortExhaustedError) as e:
            log.info("service %s (%s): endpoint left to the allocator loop: %s", s.spec.name, sid, e)
            return None
        assert out.endpoint is not None
        rec = self.in_flight.setdefault(sid, InFlight())
        rec.writers += 1
        rec.vips |= before_vips | {(v.network_id, v.addr) for v in out.endpoint.virtual_ips}
        rec.ports |= before_ports | self.ports.held(sid)
        self._hold_in_flight(sid)
        return out

    def catch_up(self) -> None:
        """Apply the events queued since the loop last looked, so that the view is the store's (a service
        removed just before holds its ports no more); wakes the loop if they call for a pass."""
        q = self._queue
        if q is None or q.closed:
            return
        due = False
        for ev in q.drain():
            due |= self.handle(ev)
        if due:
            self._poke()

    def _poke(self) -> None:
        """Ask for a pass from outside the loop (its queue may be idle: wake it)."""
        self.dirty = True
        q = self._queue
        if q is not None and not q.closed:
            q.push([_WAKE])

    def finish_in_flight(self, sid: str, unknown: int | None = None) -> None:
        """An API request's changeset for ``sid`` is through (applied or refused); ``unknown``: its
        outcome is not known, it may still commit (the version it expects, 0 for a create)."""
        rec = self.in_flight.get(sid)
        if rec is None:
            return
        rec.writers -= 1
        if unknown is not None:
            rec.unknown.append(unknown)
        self._decide_unknown(sid, seen=False)

    def _decide_unknown(self, sid: str, seen: bool) -> None:
        """Drop the proposals of unknown outcome the store has decided, then settle if nothing is left.
        A create is decided once its service exists (or any event named it: the id is its own); an
        update once the service moved past the version it expects (or is gone)."""
        rec = self.in_flight.get(sid)
        if rec is None:
            return
        if rec.unknown:
            cur = self.store.get(Service, sid)
            version = cur.meta.version if cur is not None else None

            def open_(expected: int) -> bool:
                if expected == 0:
                    return version is None and not seen
                return version == expected

            rec.unknown = [v for v in rec.unknown if open_(v)]
        if rec.writers <= 0 and not rec.unknown:
            self._settle(sid)

    def _hold_in_flight(self, sid: str) -> None:
        """Keep what in-flight changesets of ``sid`` reserved, whatever the view just did to ``sid``."""
        rec = self.in_flight.get(sid)
        if rec is None:
            return
        owner = "vip:" + sid
        for nid, addr in rec.vips:
            pool = self.nets.get(nid)
            if pool is not None and not pool.reserve(addr, owner):
                log.warning("in-flight VIP %s of service %s is held by someone else", addr, sid)
        for proto, port in self.ports.hold(sid, rec.ports):
            log.warning("in-flight port %s/%s of service %s is held by another service", port, proto, sid)

    def _settle(self, sid: str) -> None:
        """Nothing of ``sid`` is in flight any more: the view holds exactly what the store says."""
        rec = self.in_flight.pop(sid)
        owner = "vip:" + sid
        for nid, addr in rec.vips:
            self._release_addr(nid, addr, owner)
        for v in self.vips.pop(sid, ()):
            self._release_addr(v.network_id, v.addr, owner)
        self.ports.release_service(sid)
        s = self.store.get(Service, sid)
        if s is None:
            self.pending_services.pop(sid, None)
        else:
            if s.endpoint is not None:
                self._take_service(s)
            if not self._service_allocated(s):
                self.pending_services[sid] = None
        if self.pending_services:  # what waited for these reservations may go now
            self._poke()

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
        self._hold_in_flight(s.id)
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
                rec = self.in_flight.get(sid)
                if rec is not None and rec.writers > 0:
                    self.dirty = True  # an API changeset allocating it is on its way: look again after
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
