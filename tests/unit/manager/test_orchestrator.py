"""Orchestrators, restart supervisor and task reaper, driven by simulated scheduler/workers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

from agents.manager.orchestrator.replicated import _scale_down_order
from agents.state.objects import (
    NodeAvailability,
    NodeState,
    RestartCondition,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
    TaskStatus,
)
from agents.state.store import Store
from agents.state.watch import Event, EventAction
from tests.unit.manager.simworkers import (
    MS,
    Harness,
    add_node,
    create_service,
    delete_service,
    live,
    remove_node,
    running,
    running_slots,
    scale,
    set_node,
    set_retention,
    settle,
    tasks_of,
    update_service,
    wait_until,
)


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Harness() as h:
            await test(h)
            assert all(loop.running for loop in h.loops), "a control loop died"

    asyncio.run(asyncio.wait_for(main(), 5))


def live_per_slot(store: Store, sid: str) -> Counter[int]:
    return Counter(t.slot for t in live(store, sid))


def one_per_slot(store: Store, sid: str, n: int) -> bool:
    """Slots 1..n each hold exactly one task meant to run, and it runs."""
    return live_per_slot(store, sid) == Counter(range(1, n + 1)) and running_slots(store, sid) == list(
        range(1, n + 1)
    )


def policy(
    condition: RestartCondition = RestartCondition.ANY,
    delay_ms: int = 0,
    max_attempts: int = 0,
    window_ms: int = 0,
) -> Callable[[ServiceSpec], None]:
    def change(spec: ServiceSpec) -> None:
        rp = spec.task_template.restart_policy
        rp.condition, rp.delay, rp.max_attempts, rp.window = (
            condition,
            delay_ms * MS,
            max_attempts,
            window_ms * MS,
        )

    return change


def desired(store: Store, task_id: str) -> TaskState | None:
    t = store.get(Task, task_id)
    return None if t is None else t.desired_state


def slot_tasks(store: Store, sid: str, slot: int) -> list[Task]:
    return store.tasks_by_slot(sid, slot)


# ------------------------------------------------------------------------------------------- scaling


def test_scale_up_creates_one_task_per_slot() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        add_node(h.store, "n2")
        svc = create_service(h.store, "web", replicas=3)
        await wait_until(lambda: one_per_slot(h.store, svc.id, 3))
        tasks = tasks_of(h.store, svc.id)
        assert len(tasks) == 3
        for task in tasks:
            assert task.annotations.name == f"web.{task.slot}.{task.id}"
            assert task.desired_state is TaskState.RUNNING
            assert task.spec == svc.spec.task_template
            assert task.spec_version == svc.spec_version
        update_service(h.store, svc.id, scale(5))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 5))
        assert len(tasks_of(h.store, svc.id)) == 5

    run(t)


def test_scale_down_shuts_down_highest_slots_then_forgets_them() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=5)
        await wait_until(lambda: one_per_slot(h.store, svc.id, 5))
        update_service(h.store, svc.id, scale(2))
        await wait_until(lambda: sorted(live_per_slot(h.store, svc.id)) == [1, 2])
        gone = [t for t in tasks_of(h.store, svc.id) if t.slot > 2]
        assert all(t.desired_state is TaskState.SHUTDOWN for t in gone)
        # once stopped, the scaled-away slots disappear, as in `docker service ps`
        await wait_until(lambda: sorted(t.slot for t in tasks_of(h.store, svc.id)) == [1, 2])
        assert running_slots(h.store, svc.id) == [1, 2]

    run(t)


def _task(slot: int, node: str, state: TaskState = TaskState.RUNNING) -> Task:
    return Task(id=f"t{slot}", slot=slot, node_id=node, status=TaskStatus(state=state))


def test_scale_down_prefers_busiest_nodes_then_highest_slots() -> None:
    slots = [[_task(1, "a")], [_task(2, "a")], [_task(3, "a")], [_task(4, "b")], [_task(5, "c")]]
    order = [s[0].slot for s in _scale_down_order(slots)]
    assert order[:3] == [1, 4, 5]  # scaling to 3 keeps one per node
    assert order[3:] == [2, 3]
    pending = [[_task(1, "a")], [_task(2, "", TaskState.PENDING)], [_task(3, "b")]]
    assert [s[0].slot for s in _scale_down_order(pending)][-1] == 2  # unassigned goes first


def test_leader_change_during_scale_up_neither_loses_nor_duplicates_slots() -> None:
    async def t(h: Harness) -> None:
        rnd = random.Random(7)
        add_node(h.store, "n1")
        add_node(h.store, "n2")
        svc = create_service(h.store, "web", replicas=4)
        replicas = 4
        for _ in range(6):
            replicas += rnd.randint(1, 6)
            update_service(h.store, svc.id, scale(replicas))
            await asyncio.sleep(rnd.random() * 0.01)
            await h.restart_loops()  # the old leader's loops stop wherever they were
            assert max(live_per_slot(h.store, svc.id).values(), default=1) == 1
        # a scale-up committed while no leader runs loops is picked up by the next one
        await h.stop_loops()
        update_service(h.store, svc.id, scale(replicas + 3))
        h.start_loops()
        await wait_until(lambda: one_per_slot(h.store, svc.id, replicas + 3))
        await settle(0.03)
        assert one_per_slot(h.store, svc.id, replicas + 3)

    run(t)


def test_service_delete_sets_remove_and_reaper_deletes_tasks() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=3)
        stuck = create_service(
            h.store,
            "stuck",
            replicas=2,
            change=lambda s: s.task_template.placement.constraints.append("node.labels.x==y"),
        )
        await wait_until(lambda: one_per_slot(h.store, svc.id, 3))
        await wait_until(
            lambda: (
                all(t.status.state is TaskState.PENDING for t in tasks_of(h.store, stuck.id))
                and len(tasks_of(h.store, stuck.id)) == 2
            )
        )
        h.sim.silent_nodes.add(running(h.store, svc.id)[0].node_id)  # tasks keep running for now
        delete_service(h.store, svc.id)
        delete_service(h.store, stuck.id)
        await wait_until(lambda: all(t.desired_state is TaskState.REMOVE for t in tasks_of(h.store, svc.id)))
        await wait_until(lambda: not tasks_of(h.store, stuck.id))  # never assigned: deleted at once
        assert len(tasks_of(h.store, svc.id)) == 3  # still running: kept until stopped
        h.sim.silent_nodes.clear()
        await wait_until(lambda: not tasks_of(h.store, svc.id))

    run(t)


# ---------------------------------------------------------------------------------- nodes (replicated)


def test_node_down_replaces_tasks_old_ones_desired_shutdown() -> None:
    async def t(h: Harness) -> None:
        n1 = add_node(h.store, "n1")
        add_node(h.store, "n2")
        svc = create_service(h.store, "web", replicas=4, change=policy(delay_ms=3000))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 4))
        on_n1 = [t for t in tasks_of(h.store, svc.id) if t.node_id == n1.id]
        assert on_n1
        h.sim.silent_nodes.add(n1.id)
        set_node(h.store, n1.id, state=NodeState.DOWN)
        await wait_until(lambda: all(desired(h.store, t.id) is TaskState.SHUTDOWN for t in on_n1))
        # the machine vanished, the task did not crash: no restart delay (3 s here) before replacing it
        await wait_until(lambda: one_per_slot(h.store, svc.id, 4), timeout=1.5)
        for old in on_n1:
            now = h.store.get(Task, old.id)
            assert now is not None
            assert now.desired_state is TaskState.SHUTDOWN
            assert now.status.state is TaskState.RUNNING  # as last reported ("Shutdown / Running")
        assert all(t.node_id != n1.id for t in live(h.store, svc.id))

    run(t)


def test_drain_moves_tasks_and_stops_old_ones() -> None:
    async def t(h: Harness) -> None:
        n1 = add_node(h.store, "n1")
        add_node(h.store, "n2")
        svc = create_service(h.store, "web", replicas=4, change=policy(delay_ms=500))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 4))
        on_n1 = {t.id for t in tasks_of(h.store, svc.id) if t.node_id == n1.id}
        set_node(h.store, n1.id, availability=NodeAvailability.DRAIN)
        # draining ignores the restart delay (500 ms here)
        await wait_until(
            lambda: (
                one_per_slot(h.store, svc.id, 4) and all(t.node_id != n1.id for t in live(h.store, svc.id))
            ),
            timeout=0.4,
        )
        for tid in on_n1:
            old = h.store.get(Task, tid)
            assert old is not None and old.desired_state is TaskState.SHUTDOWN
            assert old.status.state is TaskState.SHUTDOWN

    run(t)


def test_removed_node_tasks_are_replaced() -> None:
    async def t(h: Harness) -> None:
        n1 = add_node(h.store, "n1")
        add_node(h.store, "n2")
        svc = create_service(h.store, "web", replicas=2)
        await wait_until(lambda: one_per_slot(h.store, svc.id, 2))
        remove_node(h.store, n1.id)
        await settle(0.01)
        await wait_until(
            lambda: (
                one_per_slot(h.store, svc.id, 2) and all(t.node_id != n1.id for t in live(h.store, svc.id))
            )
        )

    run(t)


# -------------------------------------------------------------------------------------------- restart


def created_counter(store: Store) -> Counter[str]:
    """Counts task creations per service (history retention deletes old tasks, so count events)."""
    seen: Counter[str] = Counter()

    def on_events(events: list[Event]) -> None:
        for ev in events:
            if ev.action is EventAction.CREATED and isinstance(ev.obj, Task):
                seen[ev.obj.service_id] += 1

    store.subscribe(on_events, [Task])
    return seen


def test_restart_any_replaces_failed_task_after_delay() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1, change=policy(delay_ms=150))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 1))
        first = running(h.store, svc.id)[0]
        h.sim.fail_tasks.add(first.id)
        await wait_until(lambda: len(slot_tasks(h.store, svc.id, 1)) == 2)
        old = h.store.get(Task, first.id)
        assert (
            old is not None
            and old.desired_state is TaskState.SHUTDOWN
            and old.status.state is TaskState.FAILED
        )
        new = next(t for t in slot_tasks(h.store, svc.id, 1) if t.id != first.id)
        assert new.desired_state is TaskState.READY  # held during the restart delay
        await asyncio.sleep(0.05)
        cur = h.store.get(Task, new.id)
        assert (
            cur is not None and cur.desired_state is TaskState.READY and cur.status.state <= TaskState.READY
        )
        await wait_until(lambda: one_per_slot(h.store, svc.id, 1))
        assert running(h.store, svc.id)[0].id == new.id

    run(t)


def test_restart_on_failure_ignores_clean_exit() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "job", replicas=2, change=policy(RestartCondition.ON_FAILURE))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 2))
        a, b = sorted(running(h.store, svc.id), key=lambda t: t.slot)
        h.sim.complete_tasks.add(a.id)
        h.sim.fail_tasks.add(b.id)
        await wait_until(
            lambda: len(slot_tasks(h.store, svc.id, 2)) == 2 and running_slots(h.store, svc.id) == [2]
        )
        await settle(0.05)
        assert [t.id for t in slot_tasks(h.store, svc.id, 1)] == [a.id]  # completed: not restarted
        done = h.store.get(Task, a.id)
        assert done is not None and done.status.state is TaskState.COMPLETE

    run(t)


def test_restart_none_never_restarts() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1, change=policy(RestartCondition.NONE))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 1))
        h.sim.fail_tasks.add(running(h.store, svc.id)[0].id)
        await wait_until(lambda: not running(h.store, svc.id))
        await settle(0.08)
        tasks = tasks_of(h.store, svc.id)
        assert len(tasks) == 1 and tasks[0].status.state is TaskState.FAILED
        assert tasks[0].desired_state is TaskState.SHUTDOWN

    run(t)


async def fail_running(h: Harness, sid: str) -> None:
    """Fail the service's (single) running task, once it runs."""
    await wait_until(lambda: bool(running(h.store, sid)))
    h.sim.fail_tasks.add(running(h.store, sid)[0].id)


def test_restart_max_attempts() -> None:
    async def t(h: Harness) -> None:
        created = created_counter(h.store)
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1, change=policy(max_attempts=2))
        await fail_running(h, svc.id)
        await wait_until(lambda: created[svc.id] == 2)
        await fail_running(h, svc.id)
        await wait_until(lambda: created[svc.id] == 3)
        await fail_running(h, svc.id)  # attempts used up: no more restarts
        await wait_until(lambda: not live(h.store, svc.id))
        await settle(0.08)
        assert created[svc.id] == 3  # the first run and two restarts
        assert len(slot_tasks(h.store, svc.id, 1)) == 3  # history kept: max_attempts + 1

    run(t)


def test_restart_window_counts_only_recent_restarts() -> None:
    async def t(h: Harness) -> None:
        created = created_counter(h.store)
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1, change=policy(max_attempts=1, window_ms=150))
        await wait_until(lambda: bool(running(h.store, svc.id)))
        h.sim.fail_tasks.add(running(h.store, svc.id)[0].id)
        await wait_until(lambda: created[svc.id] == 2)  # restart 1
        await wait_until(lambda: bool(running(h.store, svc.id)))
        await asyncio.sleep(0.2)  # restart 1 is now out of the window: allowed again
        h.sim.fail_tasks.add(running(h.store, svc.id)[0].id)
        await wait_until(lambda: created[svc.id] == 3)  # restart 2
        await wait_until(lambda: bool(running(h.store, svc.id)))
        h.sim.fail_tasks.add(running(h.store, svc.id)[0].id)  # restart 2 is within the window: no more
        await wait_until(lambda: not running(h.store, svc.id))
        await settle(0.08)
        assert created[svc.id] == 3
        assert not live(h.store, svc.id)

    run(t)


def test_task_rejected_before_starting_is_restarted() -> None:
    async def t(h: Harness) -> None:
        created = created_counter(h.store)
        add_node(h.store, "n1")
        h.sim.reject_images.add("missing")
        svc = create_service(h.store, "web", replicas=1, image="missing")
        await wait_until(lambda: created[svc.id] >= 4)  # keeps retrying, one live task at a time
        assert len(live(h.store, svc.id)) == 1
        assert all(
            t.status.state is TaskState.REJECTED
            for t in tasks_of(h.store, svc.id)
            if t.desired_state > TaskState.RUNNING
        )

    run(t)


def test_delayed_start_survives_leader_change() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1, change=policy(delay_ms=200))
        await wait_until(lambda: one_per_slot(h.store, svc.id, 1))
        h.sim.fail_tasks.add(running(h.store, svc.id)[0].id)
        await wait_until(lambda: any(t.desired_state is TaskState.READY for t in tasks_of(h.store, svc.id)))
        await h.restart_loops()
        await wait_until(lambda: one_per_slot(h.store, svc.id, 1))
        assert len(tasks_of(h.store, svc.id)) == 2

    run(t)


# -------------------------------------------------------------------------------------- history/reaper


async def _churn(h: Harness, sid: str, failures: int) -> None:
    for _ in range(failures):
        await wait_until(lambda: bool(running(h.store, sid)))
        h.sim.fail_tasks.add(running(h.store, sid)[0].id)
        await wait_until(
            lambda: not running(h.store, sid) or running(h.store, sid)[0].id not in h.sim.fail_tasks
        )
    await wait_until(lambda: bool(running(h.store, sid)))
    await settle(0.05)


def test_task_history_limit_default_five() -> None:
    async def t(h: Harness) -> None:
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1)
        await _churn(h, svc.id, 8)
        tasks = tasks_of(h.store, svc.id)
        assert len(tasks) == 5  # the running task and the four most recent stopped ones
        assert sum(t.status.state is TaskState.RUNNING for t in tasks) == 1

    run(t)


def test_task_history_limit_configurable() -> None:
    async def t(h: Harness) -> None:
        set_retention(h.store, 2)
        add_node(h.store, "n1")
        svc = create_service(h.store, "web", replicas=1)
        await _churn(h, svc.id, 4)
        assert len(tasks_of(h.store, svc.id)) == 2

    run(t)


def test_reaper_deletes_orphaned_tasks_without_service() -> None:
    async def t(h: Harness) -> None:
        with h.store.local_batch() as tx:
            tx.create(Task(id="orphan", status=TaskStatus(state=TaskState.ORPHANED)))
            tx.create(Task(id="loose", status=TaskStatus(state=TaskState.RUNNING)))
        await wait_until(lambda: h.store.get(Task, "orphan") is None)
        assert h.store.get(Task, "loose") is not None

    run(t)


# --------------------------------------------------------------------------------------------- global


def global_nodes(store: Store, sid: str) -> list[str]:
    return sorted(t.node_id for t in live(store, sid) if t.status.state is TaskState.RUNNING)


def test_global_one_task_per_node_follows_join_drain_leave() -> None:
    async def t(h: Harness) -> None:
        n1, n2 = add_node(h.store, "n1"), add_node(h.store, "n2")
        svc = create_service(h.store, "agent", mode=ServiceMode.GLOBAL)
        await wait_until(lambda: global_nodes(h.store, svc.id) == sorted([n1.id, n2.id]))
        for task in tasks_of(h.store, svc.id):
            assert task.slot == 0 and task.annotations.name == f"agent.{task.node_id}.{task.id}"
        n3 = add_node(h.store, "n3")
        await wait_until(lambda: global_nodes(h.store, svc.id) == sorted([n1.id, n2.id, n3.id]))
        set_node(h.store, n2.id, availability=NodeAvailability.DRAIN)
        await wait_until(lambda: global_nodes(h.store, svc.id) == sorted([n1.id, n3.id]))
        drained = h.store.tasks_by_node(n2.id)
        assert all(t.desired_state is TaskState.SHUTDOWN for t in drained)
        remove_node(h.store, n3.id)
        await wait_until(lambda: not h.store.tasks_by_node(n3.id))  # a removed node's tasks go away
        set_node(h.store, n2.id, availability=NodeAvailability.ACTIVE)
        await wait_until(lambda: global_nodes(h.store, svc.id) == sorted([n1.id, n2.id]))
        await settle(0.03)
        assert Counter(t.node_id for t in live(h.store, svc.id)) == Counter([n1.id, n2.id])

    run(t)


def test_global_follows_labels_and_node_down() -> None:
    async def t(h: Harness) -> None:
        n1 = add_node(h.store, "n1", labels={"zone": "a"})
        n2 = add_node(h.store, "n2", labels={"zone": "b"})
        svc = create_service(
            h.store,
            "agent",
            mode=ServiceMode.GLOBAL,
            change=lambda s: s.task_template.placement.constraints.append("node.labels.zone==a"),
        )
        await wait_until(lambda: global_nodes(h.store, svc.id) == [n1.id])
        set_node(h.store, n2.id, labels={"zone": "a"})
        await wait_until(lambda: global_nodes(h.store, svc.id) == sorted([n1.id, n2.id]))
        set_node(h.store, n1.id, labels={})
        await wait_until(lambda: global_nodes(h.store, svc.id) == [n2.id])
        h.sim.silent_nodes.add(n2.id)
        set_node(h.store, n2.id, state=NodeState.DOWN)
        await wait_until(lambda: not live(h.store, svc.id))
        h.sim.silent_nodes.clear()
        set_node(h.store, n2.id, state=NodeState.READY)
        await wait_until(lambda: global_nodes(h.store, svc.id) == [n2.id])

    run(t)


def test_global_restarts_failed_task_on_same_node() -> None:
    async def t(h: Harness) -> None:
        n1 = add_node(h.store, "n1")
        svc = create_service(h.store, "agent", mode=ServiceMode.GLOBAL)
        await wait_until(lambda: global_nodes(h.store, svc.id) == [n1.id])
        first = running(h.store, svc.id)[0]
        h.sim.fail_tasks.add(first.id)
        await wait_until(
            lambda: bool(running(h.store, svc.id)) and running(h.store, svc.id)[0].id != first.id
        )
        assert running(h.store, svc.id)[0].node_id == n1.id
        assert len(tasks_of(h.store, svc.id)) == 2

    run(t)
