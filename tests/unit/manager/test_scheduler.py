"""The scheduler: spreading, filters, Docker's "no suitable node" texts, batching, rebuilds."""

from __future__ import annotations

import asyncio

from agents.manager.scheduler.scheduler import ASSIGNED_MESSAGE, PREASSIGNED_MESSAGE, Scheduler
from agents.state.objects import (
    Endpoint,
    Node,
    NodeAvailability,
    NodeState,
    Placement,
    PlacementPreference,
    Platform,
    PortConfig,
    PublishMode,
    Resources,
    Task,
    TaskState,
)
from agents.state.store import Store
from tests.unit.manager.swarmfixtures import (
    CountingCommitter,
    add_nodes,
    add_service,
    add_tasks,
    eventually,
    make_node,
    make_store,
    make_task,
    per_node,
    running,
    update,
)


def schedule(store: Store, sched: Scheduler | None = None) -> Scheduler:
    """One pass, run to completion."""
    s = sched or Scheduler(store, CountingCommitter(store))
    if sched is None:
        s.rebuild()
    drain_into(s, store, lambda: asyncio.run(s.tick()))  # as the loop would: our own events come back
    return s


def drain_into(s: Scheduler, store: Store, fn) -> None:  # type: ignore[no-untyped-def]
    """Run ``fn`` (which commits to the store) and feed the scheduler the resulting events."""
    events = []
    unsub = store.subscribe(events.extend, kinds=(Task, Node))
    try:
        fn()
    finally:
        unsub()
    for ev in events:
        s.handle(ev)


def errs(store: Store) -> list[str]:
    return sorted({t.status.err for t in store.list(Task) if not t.node_id})


def test_spread_and_new_node_gets_next_tasks() -> None:
    st = make_store()
    add_nodes(st, 3)
    svc = add_service(st, replicas=7)
    add_tasks(st, svc, 7)
    s = schedule(st)
    assert sorted(per_node(st).values()) == [2, 2, 3]
    t = st.list(Task)[0]
    assert (
        t.status.state == TaskState.ASSIGNED and t.status.message == ASSIGNED_MESSAGE and t.status.err == ""
    )
    drain_into(s, st, lambda: (add_nodes(st, 1, prefix="fresh"), add_tasks(st, svc, 2, first_slot=8)))
    schedule(st, s)
    assert per_node(st)["fresh0"] == 2
    assert sorted(per_node(st).values()) == [2, 2, 2, 3]


def test_ranks_by_service_tasks_then_all_tasks() -> None:
    st = make_store()
    busy, _idle = add_nodes(st, 2)
    other = add_service(st, "other")
    with st.local_batch() as tx:
        for i in range(5):
            tx.create(make_task(other, i + 1, TaskState.RUNNING, node_id=busy.id))
    svc = add_service(st, replicas=3)
    add_tasks(st, svc, 3)
    schedule(st)
    # idle first (fewest of everything), then busy (0 of this service beats 1), then idle again.
    assert per_node(st, svc.id) == {"node0": 1, "node1": 2}


def test_constraints_filter_nodes() -> None:
    st = make_store()
    add_nodes(st, 2, prefix="east", labels={"zone": "east"})
    add_nodes(st, 2, prefix="west", labels={"zone": "West"})
    svc = add_service(st, replicas=6, placement=Placement(constraints=["node.labels.zone == west"]))
    add_tasks(st, svc, 6)
    schedule(st)
    assert per_node(st) == {"east0": 0, "east1": 0, "west0": 3, "west1": 3}


def test_unsatisfiable_constraint_explains_then_label_added_places_it() -> None:
    async def main() -> None:
        st = make_store()
        nodes = add_nodes(st, 3)
        svc = add_service(st, replicas=2, placement=Placement(constraints=["node.labels.gpu==yes"]))
        add_tasks(st, svc, 2)
        s = Scheduler(st, CountingCommitter(st), batch_window=0.005)
        async with running(s):
            await eventually(
                lambda: errs(st) == ["no suitable node (scheduling constraints not satisfied on 3 nodes)"]
            )
            assert all(t.status.state == TaskState.PENDING for t in st.list(Task))
            update(st, Node, nodes[1].id, lambda n: n.spec.labels.update(gpu="yes"))
            await eventually(lambda: per_node(st) == {"node0": 0, "node1": 2, "node2": 0})
        assert {t.status.err for t in st.list(Task)} == {""}

    asyncio.run(main())


def test_max_replicas_per_node() -> None:
    st = make_store()
    add_nodes(st, 2)
    svc = add_service(st, replicas=3, placement=Placement(max_replicas=1))
    add_tasks(st, svc, 3)
    schedule(st)
    assert per_node(st) == {"node0": 1, "node1": 1}
    assert errs(st) == ["no suitable node (max replicas per node limit exceed)"]


def test_reasons_are_combined_most_failures_first() -> None:
    st = make_store()
    add_nodes(st, 3, labels={"zone": "a"})
    add_nodes(st, 2, prefix="b", labels={"zone": "b"})
    add_nodes(st, 1, prefix="down", state=NodeState.DOWN, labels={"zone": "a"})
    svc = add_service(
        st, replicas=4, placement=Placement(constraints=["node.labels.zone==a"], max_replicas=1)
    )
    add_tasks(st, svc, 4)
    schedule(st)
    assert errs(st) == [
        "no suitable node (max replicas per node limit exceed; scheduling constraints not satisfied on 2 nodes; "
        "1 node not available for new tasks)"
    ]


def test_drained_paused_and_down_nodes_get_nothing() -> None:
    st = make_store()
    add_nodes(st, 1, prefix="drain", availability=NodeAvailability.DRAIN)
    add_nodes(st, 1, prefix="pause", availability=NodeAvailability.PAUSE)
    add_nodes(st, 1, prefix="down", state=NodeState.DOWN)
    svc = add_service(st, replicas=2)
    add_tasks(st, svc, 2)
    s = schedule(st)
    assert sum(per_node(st).values()) == 0
    assert errs(st) == ["no suitable node (3 nodes not available for new tasks)"]
    drain_into(s, st, lambda: add_nodes(st, 1, prefix="ok"))
    schedule(st, s)
    assert per_node(st)["ok0"] == 2


def test_no_nodes_at_all() -> None:
    st = make_store()
    svc = add_service(st)
    add_tasks(st, svc, 1)
    schedule(st)
    assert errs(st) == ["no suitable node"]


def test_pending_task_placed_when_node_becomes_ready() -> None:
    async def main() -> None:
        st = make_store()
        (node,) = add_nodes(st, 1, state=NodeState.DOWN)
        svc = add_service(st)
        add_tasks(st, svc, 1)
        s = Scheduler(st, CountingCommitter(st), batch_window=0.005)
        async with running(s):
            await eventually(lambda: errs(st) == ["no suitable node (1 node not available for new tasks)"])
            update(st, Node, node.id, lambda n: setattr(n.status, "state", NodeState.READY))
            await eventually(lambda: st.list(Task)[0].node_id == node.id)

    asyncio.run(main())


def test_spread_preference_over_labels() -> None:
    st = make_store()
    add_nodes(st, 1, prefix="a", labels={"rack": "a"})
    add_nodes(st, 3, prefix="b", labels={"rack": "b"})
    add_nodes(st, 2, prefix="none")
    pref = PlacementPreference(spread_descriptor="node.labels.rack")
    svc = add_service(st, replicas=9, placement=Placement(preferences=[pref]))
    add_tasks(st, svc, 9)
    schedule(st)
    counts = per_node(st)
    assert counts["a0"] == 3
    assert sorted(counts[f"b{i}"] for i in range(3)) == [1, 1, 1]
    assert sorted(counts[f"none{i}"] for i in range(2)) == [1, 2]


def test_spread_preference_counts_existing_tasks() -> None:
    st = make_store()
    (a,) = add_nodes(st, 1, prefix="a", labels={"rack": "a"})
    add_nodes(st, 1, prefix="b", labels={"rack": "b"})
    pref = PlacementPreference(spread_descriptor="node.labels.rack")
    svc = add_service(st, replicas=6, placement=Placement(preferences=[pref]))
    with st.local_batch() as tx:
        for i in range(4):
            tx.create(make_task(svc, i + 1, TaskState.RUNNING, node_id=a.id))
    add_tasks(st, svc, 6, first_slot=5)
    schedule(st)
    assert per_node(st) == {"a0": 5, "b0": 5}


def test_host_mode_port_conflicts() -> None:
    st = make_store()
    add_nodes(st, 2)
    svc = add_service(st, replicas=3)
    ep = Endpoint(ports=[PortConfig(target_port=80, published_port=8080, publish_mode=PublishMode.HOST)])
    tasks = add_tasks(st, svc, 3)
    for t in tasks:
        update(st, Task, t.id, lambda x: setattr(x, "endpoint", ep.copy()))
    schedule(st)
    assert per_node(st) == {"node0": 1, "node1": 1}
    assert errs(st) == ["no suitable node (host-mode port already in use on 2 nodes)"]


def test_platform_and_resources() -> None:
    st = make_store()
    add_nodes(st, 1, prefix="arm", arch="aarch64", cpus=4_000_000_000)
    add_nodes(st, 1, prefix="amd", arch="x86_64", cpus=4_000_000_000)
    svc = add_service(
        st, replicas=3, placement=Placement(platforms=[Platform(os="linux", architecture="arm64")])
    )
    tmpl = svc.spec.task_template.copy()
    tmpl.resources.reservations = Resources(nano_cpus=2_000_000_000)
    svc.spec.task_template = tmpl
    add_tasks(st, svc, 3)
    schedule(st)
    assert per_node(st) == {"arm0": 2, "amd0": 0}
    assert errs(st) == ["no suitable node (insufficient resources on 1 node; unsupported platform on 1 node)"]


def test_batching_uses_few_changesets() -> None:
    st = make_store()
    add_nodes(st, 10)
    svc = add_service(st, replicas=1200)
    add_tasks(st, svc, 1200)
    c = CountingCommitter(st)
    s = Scheduler(st, c, max_changeset=500)
    s.rebuild()
    asyncio.run(s.tick())
    assert c.sizes == [500, 500, 200]
    assert set(per_node(st).values()) == {120}


def test_tasks_arriving_within_the_window_share_a_pass() -> None:
    async def main() -> None:
        st = make_store()
        add_nodes(st, 4)
        svc = add_service(st, replicas=40)
        c = CountingCommitter(st)
        s = Scheduler(st, c, batch_window=0.05)
        async with running(s):
            await eventually(lambda: s.passes == 1)
            for i in range(4):
                add_tasks(st, svc, 10, first_slot=1 + 10 * i)
                await asyncio.sleep(0.005)
            await eventually(lambda: sum(per_node(st).values()) == 40)
            await asyncio.sleep(0.1)
        assert c.commits == 1 and s.passes == 2

    asyncio.run(main())


def test_restart_on_populated_store_rebuilds_node_info() -> None:
    st = make_store()
    add_nodes(st, 3)
    svc = add_service(st, replicas=6)
    add_tasks(st, svc, 6)
    schedule(st)
    for t in st.list(Task):  # the worker reports progress; node info must still count these
        update(st, Task, t.id, lambda x: setattr(x.status, "state", TaskState.RUNNING))
    s2 = Scheduler(st, CountingCommitter(st))
    s2.rebuild()
    assert sorted(ni.by_service.get(svc.id, 0) for ni in s2.nodes.values()) == [2, 2, 2]
    add_tasks(st, svc, 3, first_slot=7)
    s2.rebuild()
    schedule(st, s2)
    assert sorted(per_node(st).values()) == [3, 3, 3]


def test_events_keep_node_info_current() -> None:
    st = make_store()
    add_nodes(st, 2)
    svc = add_service(st, replicas=2)
    add_tasks(st, svc, 2)
    s = schedule(st)
    victim = st.list(Task)[0]
    drain_into(
        s, st, lambda: update(st, Task, victim.id, lambda x: setattr(x.status, "state", TaskState.FAILED))
    )
    assert sorted(ni.active for ni in s.nodes.values()) == [0, 1]
    drain_into(s, st, lambda: add_tasks(st, svc, 1, first_slot=3))
    schedule(st, s)
    assert sorted(n for n in per_node(st).values()) == [1, 2]  # the failed task still names its node
    assert s.nodes[victim.node_id].active == 1


def test_preassigned_global_tasks() -> None:
    st = make_store()
    ok, drained = add_nodes(st, 1, prefix="ok") + add_nodes(
        st, 1, prefix="dr", availability=NodeAvailability.DRAIN
    )
    svc = add_service(st, "agent")
    with st.local_batch() as tx:
        tx.create(make_task(svc, 0, TaskState.PENDING, node_id=ok.id))
        tx.create(make_task(svc, 0, TaskState.PENDING, node_id=drained.id))
    schedule(st)
    by_node = {t.node_id: t for t in st.list(Task)}
    assert by_node[ok.id].status.state == TaskState.ASSIGNED
    assert by_node[ok.id].status.message == PREASSIGNED_MESSAGE
    assert by_node[drained.id].status.state == TaskState.PENDING
    assert by_node[drained.id].status.err == "1 node not available for new tasks"


def test_fell_behind_rebuilds() -> None:
    async def main() -> None:
        st = make_store()
        add_nodes(st, 2)
        svc = add_service(st, replicas=30)
        s = Scheduler(st, CountingCommitter(st), batch_window=0.005, queue_size=10)
        async with running(s):
            await eventually(lambda: s.passes >= 1)
            add_tasks(st, svc, 30)  # 30 events overflow the 10-event queue
            await eventually(lambda: sum(per_node(st).values()) == 30)
        assert set(per_node(st).values()) == {15}

    asyncio.run(main())


def test_task_changed_before_commit_is_not_overwritten() -> None:
    st = make_store()
    add_nodes(st, 2)
    svc = add_service(st, replicas=2)
    t1, t2 = add_tasks(st, svc, 2)
    s = Scheduler(st, CountingCommitter(st))
    s.rebuild()
    decisions = s.plan()
    update(st, Task, t2.id, lambda x: setattr(x, "desired_state", TaskState.SHUTDOWN))
    txs = s.build(decisions)
    assert len(txs) == 1 and len(txs[0]) == 1
    st.commit_local(txs[0].changeset)  # type: ignore[arg-type]
    assert st.get(Task, t1.id).node_id  # type: ignore[union-attr]
    assert st.get(Task, t2.id).node_id == ""  # type: ignore[union-attr]
    assert sum(ni.active for ni in s.nodes.values()) == 1


def test_down_node_task_lists_are_ignored_for_unknown_nodes() -> None:
    st = make_store()
    n = make_node("late")
    svc = add_service(st)
    with st.local_batch() as tx:
        tx.create(make_task(svc, 1, TaskState.RUNNING, node_id=n.id))
    s = Scheduler(st, CountingCommitter(st))
    s.rebuild()
    drain_into(s, st, lambda: add_nodes_obj(st, n))
    assert s.nodes[n.id].by_service == {svc.id: 1}


def add_nodes_obj(st: Store, n: Node) -> None:
    with st.local_batch() as tx:
        tx.create(n)


def test_rejected_changeset_rebuilds_and_retries() -> None:
    class Racing(CountingCommitter):
        """Another writer lands first (as under Raft): the first changeset is rejected."""

        def __init__(self, store: Store, race) -> None:  # type: ignore[no-untyped-def]
            super().__init__(store)
            self.race = race

        async def commit(self, changeset):  # type: ignore[no-untyped-def]
            if self.race is not None:
                race, self.race = self.race, None
                race()
            return await super().commit(changeset)

    async def main() -> None:
        st = make_store()
        add_nodes(st, 2)
        svc = add_service(st, replicas=4)
        tasks = add_tasks(st, svc, 4)

        def race() -> None:
            update(st, Task, tasks[0].id, lambda t: setattr(t, "desired_state", TaskState.SHUTDOWN))

        c = Racing(st, race)
        s = Scheduler(st, c, batch_window=0.005)
        async with running(s):
            await eventually(lambda: sum(per_node(st).values()) == 3)
        assert c.rejected == 1
        assert st.get(Task, tasks[0].id).node_id == ""  # type: ignore[union-attr]
        assert sorted(per_node(st).values()) == [1, 2]

    asyncio.run(main())
