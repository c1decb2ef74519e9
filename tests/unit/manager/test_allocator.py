"""The allocator: ingress, subnets, published ports (Docker's conflict texts), VIPs, task addresses."""

from __future__ import annotations

import asyncio

import pytest

from agents.manager.allocator import ALLOCATED_MESSAGE, Allocator, ensure_ingress
from agents.manager.portalloc import PortConflictError, check_ports
from agents.state.objects import (
    ContainerSpec,
    EndpointSpec,
    IPAMConfig,
    Network,
    NetworkAttachmentConfig,
    NetworkSpec,
    PortConfig,
    PortProtocol,
    PublishMode,
    ResolutionMode,
    Service,
    ServiceSpec,
    Task,
    TaskSpec,
    TaskState,
    new_id,
)
from agents.state.store import Store
from tests.unit.manager.swarmfixtures import (
    CountingCommitter,
    add_tasks,
    eventually,
    make_store,
    running,
    update,
)


def port(
    target: int, published: int = 0, mode: PublishMode = PublishMode.INGRESS, proto: str = "tcp"
) -> PortConfig:
    return PortConfig(
        target_port=target, published_port=published, publish_mode=mode, protocol=PortProtocol(proto)
    )


def service_spec(
    name: str, ports: list[PortConfig] | None = None, networks: list[str] | None = None
) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        task_template=TaskSpec(
            container=ContainerSpec(image="nginx"),
            networks=[NetworkAttachmentConfig(target=n) for n in networks or []],
        ),
        endpoint_spec=EndpointSpec(ports=list(ports or [])),
    )


def create(store: Store, obj):  # type: ignore[no-untyped-def]
    with store.local_batch() as tx:
        tx.create(obj)
    return obj


def cluster() -> Store:
    st = make_store()
    with st.local_batch() as tx:
        ensure_ingress(tx)
    return st


class Driven(Allocator):
    """An allocator fed every store event as it happens, ticked by hand (the loop without the loop)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, CountingCommitter(store))
        self.rebuild()
        self.events: list = []
        store.subscribe(self.events.extend, kinds=self.kinds)

    def feed(self) -> None:
        evs, self.events[:] = list(self.events), []
        for ev in evs:
            self.handle(ev)


def allocate(store: Store, alloc: Driven | None = None) -> Driven:
    """One allocator pass; a fresh allocator (a new leader) unless ``alloc`` is given."""
    a = alloc or Driven(store)
    a.feed()
    asyncio.run(a.tick())
    a.feed()
    return a


def net(store: Store, name: str) -> Network:
    (n,) = [x for x in store.list(Network) if x.spec.name == name]
    return n


def svc_of(store: Store, sid: str) -> Service:
    s = store.get(Service, sid)
    assert s is not None
    return s


def test_ingress_created_once_and_allocated_like_docker() -> None:
    st = cluster()
    with st.local_batch() as tx:
        assert ensure_ingress(tx) is None
    allocate(st)
    ing = net(st, "ingress")
    assert ing.spec.ingress and ing.spec.driver == "overlay"
    assert ing.allocated is not None
    assert (ing.allocated.subnet, ing.allocated.gateway) == ("10.0.0.0/24", "10.0.0.1")
    assert ing.allocated.driver_state.options == {"com.docker.network.driver.overlay.vxlanid_list": "4096"}


def test_overlay_networks_get_the_next_subnets() -> None:
    st = cluster()
    create(st, Network(spec=NetworkSpec(name="front")))
    create(st, Network(spec=NetworkSpec(name="mine", ipam=[IPAMConfig(subnet="10.0.2.0/24")])))
    create(st, Network(spec=NetworkSpec(name="back")))
    a = allocate(st)
    got = {n.spec.name: n.allocated.subnet for n in st.list(Network) if n.allocated}
    assert got == {
        "ingress": "10.0.0.0/24",
        "front": "10.0.1.0/24",
        "mine": "10.0.2.0/24",
        "back": "10.0.3.0/24",
    }
    assert net(st, "back").allocated.gateway == "10.0.3.1"  # type: ignore[union-attr]
    with st.local_batch() as tx:
        tx.delete(Network, net(st, "front").id)
    create(st, Network(spec=NetworkSpec(name="again")))
    allocate(st, a)
    assert net(st, "again").allocated.subnet == "10.0.1.0/24"  # type: ignore[union-attr]


def test_published_port_zero_gets_lowest_free_from_30000() -> None:
    st = cluster()
    s1 = create(st, Service(id=new_id(), spec=service_spec("a", [port(80)])))
    s2 = create(st, Service(id=new_id(), spec=service_spec("b", [port(80), port(53, proto="udp")])))
    a = allocate(st)
    assert [p.published_port for p in svc_of(st, s1.id).endpoint.ports] == [30000]  # type: ignore[union-attr]
    assert [p.published_port for p in svc_of(st, s2.id).endpoint.ports] == [30001, 30000]  # type: ignore[union-attr]
    with st.local_batch() as tx:
        tx.delete(Service, s1.id)
    s3 = create(st, Service(id=new_id(), spec=service_spec("c", [port(8080)])))
    allocate(st, a)
    assert [p.published_port for p in svc_of(st, s3.id).endpoint.ports] == [30000]  # type: ignore[union-attr]


def test_port_conflict_error_text() -> None:
    st = cluster()
    web = create(st, Service(id=new_id(), spec=service_spec("web", [port(80, 5000)])))
    api = create(st, Service(id=new_id(), spec=service_spec("api", [port(80, 7000, PublishMode.HOST)])))
    allocate(st)
    with pytest.raises(PortConflictError) as e:
        check_ports(st, service_spec("other", [port(8080, 5000)]))
    assert str(e.value) == f"port '5000' is already in use by service 'web' ({web.id}) as an ingress port"
    with pytest.raises(PortConflictError) as e:
        check_ports(st, service_spec("other", [port(8080, 5000, PublishMode.HOST)]))
    assert str(e.value) == f"port '5000' is already in use by service 'web' ({web.id}) as an ingress port"
    with pytest.raises(PortConflictError) as e:
        check_ports(st, service_spec("other", [port(80, 7000)]))
    assert (
        str(e.value) == f"port '7000' is already in use by service 'api' ({api.id}) as a host-published port"
    )
    check_ports(st, service_spec("other", [port(80, 7000, PublishMode.HOST)]))  # host ports may repeat
    check_ports(st, service_spec("other", [port(80, 5000, proto="udp")]))  # other protocol
    check_ports(st, service_spec("web", [port(80, 5000)]), service_id=web.id)  # updating web itself
    with pytest.raises(PortConflictError) as e:  # auto-assigned ports count as well
        create(st, Service(id=new_id(), spec=service_spec("auto", [port(80)])))
        allocate(st)
        check_ports(st, service_spec("other", [port(80, 30000)]))
    assert "as an ingress port" in str(e.value)


def test_vips_stable_across_update_and_freed_on_delete() -> None:
    st = cluster()
    create(st, Network(spec=NetworkSpec(name="back")))
    create(st, Network(spec=NetworkSpec(name="extra")))
    s = create(st, Service(id=new_id(), spec=service_spec("web", [port(80)], ["back"])))
    a = allocate(st)
    ep = svc_of(st, s.id).endpoint
    assert ep is not None
    ing, back, extra = net(st, "ingress").id, net(st, "back").id, net(st, "extra").id
    assert [(v.network_id, v.addr) for v in ep.virtual_ips] == [(ing, "10.0.0.2/24"), (back, "10.0.1.2/24")]
    before = {v.network_id: v.addr for v in ep.virtual_ips}

    def change(x: Service) -> None:
        x.spec.task_template.container.image = "nginx:2"
        x.spec.task_template.networks.append(NetworkAttachmentConfig(target=extra))
        x.spec.endpoint_spec.ports.append(port(443))

    update(st, Service, s.id, change)
    allocate(st, a)
    ep2 = svc_of(st, s.id).endpoint
    assert ep2 is not None
    after = {v.network_id: v.addr for v in ep2.virtual_ips}
    assert after[ing] == before[ing] and after[back] == before[back] and after[extra] == "10.0.2.2/24"
    assert [p.published_port for p in ep2.ports] == [30000, 30001]  # the first port kept its number
    update(st, Service, s.id, lambda x: setattr(x.spec.endpoint_spec, "ports", []))
    allocate(st, a)
    assert [v.network_id for v in svc_of(st, s.id).endpoint.virtual_ips] == [back, extra]  # type: ignore[union-attr]
    assert 0x0A000002 not in a.nets[ing].used  # ingress VIP released
    with st.local_batch() as tx:
        tx.delete(Service, s.id)
    allocate(st, a)
    assert set(a.nets[back].used.values()) == {"gateway"}
    assert a.ports.owner == {}


def test_dnsrr_service_gets_no_vips() -> None:
    st = cluster()
    create(st, Network(spec=NetworkSpec(name="back")))
    spec = service_spec("db", networks=["back"])
    spec.endpoint_spec.mode = ResolutionMode.DNSRR
    s = create(st, Service(id=new_id(), spec=spec))
    allocate(st)
    assert svc_of(st, s.id).endpoint.virtual_ips == []  # type: ignore[union-attr]


def test_tasks_get_unique_addresses_and_move_to_pending() -> None:
    st = cluster()
    create(st, Network(spec=NetworkSpec(name="back")))
    s = create(st, Service(id=new_id(), spec=service_spec("web", [port(80)], ["back"])))
    add_tasks(st, s, 50, state=TaskState.NEW)
    a = allocate(st)
    tasks = st.list(Task)
    assert {t.status.state for t in tasks} == {TaskState.PENDING}
    assert {t.status.message for t in tasks} == {ALLOCATED_MESSAGE}
    ing, back = net(st, "ingress").id, net(st, "back").id
    for t in tasks:
        assert [att.network_id for att in t.networks] == [ing, back]
        assert t.endpoint == svc_of(st, s.id).endpoint
    addrs = [att.addresses[0] for t in tasks for att in t.networks]
    vips = [v.addr for v in svc_of(st, s.id).endpoint.virtual_ips]  # type: ignore[union-attr]
    assert len(set(addrs + vips)) == len(addrs) + len(vips) == 102
    assert tasks[0].networks[1].addresses == ["10.0.1.3/24"]
    # A terminal task gives its addresses back.
    gone = tasks[0]
    update(st, Task, gone.id, lambda t: setattr(t.status, "state", TaskState.FAILED))
    allocate(st, a)
    assert gone.id not in a.task_addrs
    assert int.from_bytes(bytes([10, 0, 1, 3]), "big") not in a.nets[back].used


def test_service_without_networks_or_ports() -> None:
    st = cluster()
    s = create(st, Service(id=new_id(), spec=service_spec("plain")))
    add_tasks(st, s, 3, state=TaskState.NEW)
    allocate(st)
    assert {t.status.state for t in st.list(Task)} == {TaskState.PENDING}
    assert all(t.networks == [] for t in st.list(Task))
    assert svc_of(st, s.id).endpoint.spec == EndpointSpec()  # type: ignore[union-attr]


def test_tasks_wait_for_their_service_and_network() -> None:
    st = cluster()
    blocker = create(st, Service(id=new_id(), spec=service_spec("blocker", [port(80, 8080)])))
    a = allocate(st)
    # Bypassing the API check: the same port again, and a network that does not exist yet.
    s = create(st, Service(id=new_id(), spec=service_spec("late", [port(80, 8080)])))
    add_tasks(st, s, 2, state=TaskState.NEW)
    allocate(st, a)
    assert {t.status.state for t in st.tasks_by_service(s.id)} == {TaskState.NEW}
    with st.local_batch() as tx:
        tx.delete(Service, blocker.id)
    allocate(st, a)
    assert svc_of(st, s.id).endpoint.ports[0].published_port == 8080  # type: ignore[union-attr]
    assert {t.status.state for t in st.tasks_by_service(s.id)} == {TaskState.PENDING}


def test_rebuild_on_populated_store_continues_without_collisions() -> None:
    st = cluster()
    create(st, Network(spec=NetworkSpec(name="back")))
    s = create(st, Service(id=new_id(), spec=service_spec("web", [port(80)], ["back"])))
    add_tasks(st, s, 5, state=TaskState.NEW)
    allocate(st)
    # A new leader: fresh allocator on the same store.
    s2 = create(st, Service(id=new_id(), spec=service_spec("api", [port(81)], ["back"])))
    add_tasks(st, s2, 5, state=TaskState.NEW)
    create(st, Network(spec=NetworkSpec(name="more")))
    allocate(st)
    assert svc_of(st, s2.id).endpoint.ports[0].published_port == 30001  # type: ignore[union-attr]
    assert net(st, "more").allocated.subnet == "10.0.2.0/24"  # type: ignore[union-attr]
    addrs = [a for t in st.list(Task) for att in t.networks for a in att.addresses]
    addrs += [v.addr for sv in st.list(Service) for v in sv.endpoint.virtual_ips]  # type: ignore[union-attr]
    assert len(addrs) == len(set(addrs)) == 24


def test_loop_allocates_and_batches() -> None:
    async def main() -> None:
        st = cluster()
        s = create(st, Service(id=new_id(), spec=service_spec("web")))
        c = CountingCommitter(st)
        a = Allocator(st, c, batch_window=0.02, max_changeset=300)
        async with running(a):
            await eventually(lambda: svc_of(st, s.id).endpoint is not None)
            before = c.commits
            add_tasks(st, s, 400, state=TaskState.NEW)
            add_tasks(st, s, 200, state=TaskState.NEW, first_slot=401)
            await eventually(lambda: all(t.status.state == TaskState.PENDING for t in st.list(Task)))
            assert c.sizes[before:] == [300, 300]

    asyncio.run(main())


def test_invalid_explicit_subnet_overlap_stays_unallocated() -> None:
    st = cluster()
    create(st, Network(spec=NetworkSpec(name="clash", ipam=[IPAMConfig(subnet="10.0.0.0/16")])))
    allocate(st)
    assert net(st, "clash").allocated is None


def test_allocator_then_scheduler_end_to_end() -> None:
    from agents.manager.scheduler import Scheduler
    from tests.unit.manager.swarmfixtures import add_nodes, per_node

    async def main() -> None:
        st = cluster()
        add_nodes(st, 3)
        create(st, Network(spec=NetworkSpec(name="back")))
        s = create(st, Service(id=new_id(), spec=service_spec("web", [port(80)], ["back"])))
        a = Allocator(st, CountingCommitter(st), batch_window=0.005)
        sched = Scheduler(st, CountingCommitter(st), batch_window=0.005)
        async with running(a, sched):
            add_tasks(st, s, 6, state=TaskState.NEW)
            await eventually(lambda: all(t.status.state == TaskState.ASSIGNED for t in st.list(Task)))
        assert sorted(per_node(st).values()) == [2, 2, 2]
        assert all(len(t.networks) == 2 and t.endpoint is not None for t in st.list(Task))

    asyncio.run(main())


def test_rejected_changeset_rebuilds_from_the_store() -> None:
    class Racing(CountingCommitter):
        """Lets another writer land first on the first commit, as a Raft leader may see."""

        def __init__(self, store: Store, race) -> None:  # type: ignore[no-untyped-def]
            super().__init__(store)
            self.race = race

        async def commit(self, changeset):  # type: ignore[no-untyped-def]
            if self.race is not None and any(op.kind == "service" for op in changeset.ops):
                race, self.race = self.race, None
                race()
            return await super().commit(changeset)

    async def main() -> None:
        st = cluster()
        s = create(st, Service(id=new_id(), spec=service_spec("web", [port(80)])))
        first = add_tasks(st, s, 3, state=TaskState.NEW)

        def race() -> None:
            update(st, Service, s.id, lambda x: x.spec.labels.update(touched="yes"))

        committer = Racing(st, race)
        a = Allocator(st, committer, batch_window=0.005)
        async with running(a):
            await eventually(lambda: all(t.status.state == TaskState.PENDING for t in st.list(Task)))
        assert committer.rejected == 1
        ep = svc_of(st, s.id).endpoint
        assert ep is not None and [p.published_port for p in ep.ports] == [30000]
        assert len(first) == 3

    asyncio.run(main())
