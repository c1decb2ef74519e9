"""Endpoints allocated inline, in the API's create/update changeset (``endpoint_inline``).

The service must be written once with its VIPs and ports, reserved for its real id; what an API
changeset reserved stays reserved while it is in flight (across rebuilds, events and the loop's own
passes), a refused one releases it, one of unknown outcome keeps it until the service shows it, and a
new leader's allocator rebuilt from the store holds exactly the same.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import pytest

from agents.manager.allocator import Allocator, active_allocator, endpoint_inline
from agents.manager.errors import NoLeader
from agents.manager.updater import apply_spec_update
from agents.state.objects import Network, NetworkSpec, Service, ServiceSpec, new_id
from agents.state.store import Store
from agents.state.tx import Tx
from tests.unit.manager.swarmfixtures import CountingCommitter, eventually, running, update
from tests.unit.manager.test_allocator import (
    Driven,
    allocate,
    cluster,
    create,
    net,
    port,
    service_spec,
    svc_of,
)


class Refused(Exception):
    """What the API raises for a changeset the store refused (an ``ApiError`` there)."""


async def api_write(
    st: Store, obj: Service, write: Callable[[Tx, Service], object], before_commit: Callable[[], object] = lambda: None
) -> Service:
    """The API's create/update path: allocate inline, build, commit; a refused changeset raises."""
    with endpoint_inline(st, obj) as s:
        with st.batch() as tx:
            write(tx, s)
        before_commit()
        await asyncio.sleep(0)  # the Raft round trip: the loop may run meanwhile
        assert tx.changeset is not None
        result = st.commit_local(tx.changeset)
        if not result.ok:
            raise Refused(str(result.error))
    return s


async def api_create(st: Store, spec: ServiceSpec, before_commit: Callable[[], object] = lambda: None) -> Service:
    return await api_write(st, Service(id=new_id(), spec=spec), lambda tx, s: tx.create(s), before_commit)


async def api_update(st: Store, sid: str, change: Callable[[ServiceSpec], None]) -> Service:
    cur = svc_of(st, sid)
    spec = cur.spec.copy()
    change(spec)
    return await api_write(st, apply_spec_update(cur, spec), lambda tx, s: tx.update(s))


def vip_owner(st: Store, a: Allocator, addr: str, network: str = "ingress") -> str | None:
    pool = a.nets[net(st, network).id]
    return pool.used.get(int(ipaddress.ip_interface(addr).ip))


def initialised() -> Store:
    """A store as after ``docker swarm init``: the ingress network allocated."""
    st = cluster()
    allocate(st)
    return st


def ports_of(s: Service) -> list[int]:
    assert s.endpoint is not None
    return [p.published_port for p in s.endpoint.ports]


def vips_of(s: Service) -> list[str]:
    assert s.endpoint is not None
    return [v.addr for v in s.endpoint.virtual_ips]


async def settle(a: Allocator, rounds: int = 6) -> None:
    """Several batch windows: whatever the loop would write, it has written."""
    for _ in range(rounds):
        await asyncio.sleep(a.batch_window * 2)


def loop_on(st: Store) -> Allocator:
    return Allocator(st, CountingCommitter(st), batch_window=0.005)


def test_create_is_written_once_with_its_endpoint_reserved_for_its_id() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            assert active_allocator(st) is a
            s = await api_create(st, service_spec("web", [port(80, 8080), port(81)]))
            stored = svc_of(st, s.id)
            version = stored.meta.version
            assert ports_of(stored) == [8080, 30000] and vips_of(stored) == ["10.0.0.2/24"]
            await settle(a)
            assert svc_of(st, s.id).meta.version == version  # nobody wrote it again
            assert vip_owner(st, a, "10.0.0.2/24") == "vip:" + s.id
            assert a.ports.owner[(port(81).protocol, 30000)] == s.id and a.in_flight == {}
            other = await api_create(st, service_spec("api", [port(82)]))
            assert ports_of(svc_of(st, other.id)) == [30001] and vips_of(svc_of(st, other.id)) == ["10.0.0.3/24"]
        assert active_allocator(st) is None
        fresh = Driven(st)  # a new leader: the same reservations, same owners
        assert fresh.ports.owner == a.ports.owner
        assert fresh.nets[net(st, "ingress").id].used == a.nets[net(st, "ingress").id].used

    asyncio.run(main())


def test_without_a_running_allocator_the_service_is_written_as_given() -> None:
    st = initialised()

    async def main() -> None:
        s = await api_create(st, service_spec("web", [port(80)]))
        assert svc_of(st, s.id).endpoint is None  # the loop allocates it once it runs
        a = loop_on(st)
        async with running(a):
            await eventually(lambda: svc_of(st, s.id).endpoint is not None)
        assert ports_of(svc_of(st, s.id)) == [30000]

    asyncio.run(main())


def test_a_refused_create_releases_what_it_reserved() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            def same_name_first() -> None:
                create(st, Service(id=new_id(), spec=service_spec("web")))  # lands first: a name conflict

            with pytest.raises(Refused):
                await api_create(st, service_spec("web", [port(80)]), before_commit=same_name_first)
            assert a.in_flight == {}
            s = await api_create(st, service_spec("next", [port(80)]))
            assert ports_of(svc_of(st, s.id)) == [30000]  # the refused create's port is free again
            doomed = Service(id=new_id(), spec=service_spec("x", [port(9)]))
            with pytest.raises(ValueError), endpoint_inline(st, doomed):  # an error while building: released
                raise ValueError("bad")
            assert a.in_flight == {} and list(a.ports.owner.values()) == [s.id]

    asyncio.run(main())


def test_in_flight_reservations_survive_rebuilds_and_are_never_handed_out_twice() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            # The first create reserves, then waits (its Raft round trip) while the loop rebuilds from a
            # store without it and a second create runs.
            with endpoint_inline(st, Service(id=new_id(), spec=service_spec("first", [port(80)]))) as first:
                a.resync()
                await settle(a)
                second = svc_of(st, (await api_create(st, service_spec("second", [port(81)]))).id)
                with st.batch() as tx:
                    tx.create(first)
                assert tx.changeset is not None and st.commit_local(tx.changeset).ok
            assert ports_of(svc_of(st, first.id)) == [30000] and ports_of(second) == [30001]
            assert vips_of(svc_of(st, first.id)) != vips_of(second)
            await settle(a)
            assert a.in_flight == {}

    asyncio.run(main())


def test_an_update_holds_old_and_new_reservations_until_it_is_through() -> None:
    st = initialised()
    create(st, Network(spec=NetworkSpec(name="back")))
    allocate(st)

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            s = await api_create(st, service_spec("web", [port(80, 8080)], ["back"]))
            assert ports_of(svc_of(st, s.id)) == [8080]
            back_vip = [v.addr for v in svc_of(st, s.id).endpoint.virtual_ips  # type: ignore[union-attr]
                        if v.network_id == net(st, "back").id]
            cur = svc_of(st, s.id)
            spec = cur.spec.copy()
            spec.endpoint_spec.ports = [port(81)]
            spec.task_template.networks = []
            with endpoint_inline(st, apply_spec_update(cur, spec)) as updated:
                assert ports_of(updated) == [30000] and len(vips_of(updated)) == 1
                # In flight (it may still be refused): the old port and the old VIP on "back" stay taken.
                rival = await api_create(st, service_spec("rival", [port(1, 8080)]))
                assert svc_of(st, rival.id).endpoint is None  # left to the loop: 8080 is not free yet
                other = await api_create(st, service_spec("other", [], ["back"]))
                assert back_vip[0] not in vips_of(svc_of(st, other.id))
                with st.batch() as tx:
                    tx.update(updated)
                assert tx.changeset is not None and st.commit_local(tx.changeset).ok
            assert a.in_flight == {}
            version = svc_of(st, s.id).meta.version
            await eventually(lambda: svc_of(st, rival.id).endpoint is not None)
            assert ports_of(svc_of(st, rival.id)) == [8080]  # released once the update was through
            await settle(a)
            assert svc_of(st, s.id).meta.version == version
            assert vip_owner(st, a, back_vip[0], "back") is None

            # A refused update gives back what it took and keeps what the service had.
            def touch() -> None:  # another write lands first: the update's version is stale at apply
                update(st, Service, s.id, lambda x: x.spec.labels.update(touched="yes"))  # type: ignore[attr-defined]

            with pytest.raises(Refused):
                await api_write(st, _more_ports(svc_of(st, s.id)), lambda tx, x: tx.update(x), touch)
            assert a.ports.owner[(port(1).protocol, 30000)] == s.id
            assert sorted(p for (_, p) in a.ports.owner) == [8080, 30000]

    asyncio.run(main())


def _more_ports(s: Service) -> Service:
    spec = s.spec.copy()
    spec.endpoint_spec.ports = [port(81), port(90)]
    return apply_spec_update(s, spec)


def test_unknown_outcome_keeps_the_reservations_until_the_store_decides() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            proposed: list[Tx] = []
            fresh = Service(id=new_id(), spec=service_spec("web", [port(80)]))
            with pytest.raises(NoLeader), endpoint_inline(st, fresh) as s:
                with st.batch() as tx:
                    tx.create(s)
                proposed.append(tx)
                raise NoLeader()  # the proposal timed out: it may still commit
            assert s.id in a.in_flight
            a.resync()
            other = await api_create(st, service_spec("other", [port(80)]))
            assert ports_of(svc_of(st, other.id)) == [30001]  # 30000 may still be the first one's
            changeset = proposed[0].changeset
            assert changeset is not None and st.commit_local(changeset).ok  # it did commit, late
            await eventually(lambda: s.id not in a.in_flight)
            assert a.ports.owner[(port(80).protocol, 30000)] == s.id

            # An update of unknown outcome: held until the service moves past the version it expected.
            cur = svc_of(st, s.id)
            spec = cur.spec.copy()
            spec.endpoint_spec.ports = [port(80), port(81)]
            with pytest.raises(NoLeader), endpoint_inline(st, apply_spec_update(cur, spec)) as updated:
                assert ports_of(updated) == [30000, 30002]
                raise NoLeader()
            a.resync()
            assert a.ports.owner[(port(81).protocol, 30002)] == s.id  # it may still commit
            update(st, Service, s.id, lambda x: x.spec.labels.update(touched="yes"))  # type: ignore[attr-defined]
            await eventually(lambda: s.id not in a.in_flight)  # now it never can
            assert (port(81).protocol, 30002) not in a.ports.owner

    asyncio.run(main())


def test_the_loop_leaves_a_service_alone_while_an_api_write_allocates_it() -> None:
    st = initialised()

    async def main() -> None:
        committer = CountingCommitter(st)
        a = Allocator(st, committer, batch_window=0.005)
        async with running(a):
            s = await api_create(st, service_spec("web", [port(80)]))
            cur = svc_of(st, s.id)
            spec = cur.spec.copy()
            spec.endpoint_spec.ports = [port(80), port(81)]
            with pytest.raises(Refused), endpoint_inline(st, apply_spec_update(cur, spec)) as updated:
                with st.batch() as tx:
                    tx.update(updated)
                before = committer.commits
                # Meanwhile another write leaves the stored service needing an allocation.
                update(st, Service, s.id, lambda x: x.spec.endpoint_spec.ports.append(port(82)))  # type: ignore[attr-defined]
                await settle(a)
                assert committer.commits == before  # the loop waits for the API's write
                assert tx.changeset is not None
                result = st.commit_local(tx.changeset)
                if not result.ok:
                    raise Refused(str(result.error))
            # Refused (the version moved): the loop now allocates what the store holds.
            await eventually(lambda: svc_of(st, s.id).endpoint is not None
                             and len(svc_of(st, s.id).endpoint.ports) == 2)  # type: ignore[union-attr]
            assert ports_of(svc_of(st, s.id)) == [30000, 30001] and a.in_flight == {}

    asyncio.run(main())


def test_a_port_freed_by_a_removal_just_before_is_allocated_inline() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            first = await api_create(st, service_spec("web", [port(80, 8080)]))
            with st.local_batch() as tx:
                tx.delete(Service, first.id)
            # No await: the loop has not seen the removal yet; the inline path catches up first.
            again = await api_create(st, service_spec("web", [port(80, 8080)]))
            assert ports_of(svc_of(st, again.id)) == [8080]
            version = svc_of(st, again.id).meta.version
            await settle(a)
            assert svc_of(st, again.id).meta.version == version

    asyncio.run(main())


def test_an_update_that_changes_no_endpoint_allocates_nothing() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            s = await api_create(st, service_spec("web", [port(80)]))
            endpoint = svc_of(st, s.id).endpoint
            await api_update(st, s.id, lambda spec: setattr(spec, "replicas", 3))
            assert svc_of(st, s.id).endpoint == endpoint and a.in_flight == {}

    asyncio.run(main())


def test_the_id_is_chosen_before_the_endpoint_is_allocated() -> None:
    st = initialised()

    async def main() -> None:
        a = loop_on(st)
        async with running(a):
            with pytest.raises(ValueError, match="id must be chosen"):
                a.reserve_endpoint(Service(spec=service_spec("web", [port(80)])))
            assert a.in_flight == {} and a.ports.owner == {}

    asyncio.run(main())
