"""Rolling updates, failure actions and rollbacks, driven by simulated scheduler/workers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from agents.manager.updater import apply_rollback
from agents.state.objects import (
    FailureAction,
    NodeAvailability,
    NodeState,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
    UpdateOrder,
    UpdateState,
    UpdateStatus,
)
from agents.state.store import Store
from agents.state.watch import Event, EventAction
from tests.unit.manager.simworkers import (
    MS,
    Harness,
    add_node,
    create_service,
    live,
    running,
    scale,
    set_node,
    settle,
    update_service,
    wait_until,
)


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Harness() as h:
            await test(h)
            assert all(loop.running for loop in h.loops), "a control loop died"

    asyncio.run(asyncio.wait_for(main(), 5))


def service(store: Store, sid: str) -> Service:
    s = store.get(Service, sid)
    assert s is not None
    return s


def status(store: Store, sid: str) -> UpdateStatus:
    st = service(store, sid).update_status
    assert st is not None
    return st


def state_of(store: Store, sid: str) -> UpdateState | None:
    st = service(store, sid).update_status
    return None if st is None else st.state


def images(store: Store, sid: str) -> Counter[str]:
    return Counter(t.spec.container.image for t in live(store, sid) if t.status.state is TaskState.RUNNING)


def converged(store: Store, sid: str, n: int, image: str) -> bool:
    """Every slot has exactly one task meant to run, running ``image``."""
    tasks = live(store, sid)
    return (
        len(tasks) == n
        and len({t.slot for t in tasks}) == n
        and all(t.status.state is TaskState.RUNNING and t.spec.container.image == image for t in tasks)
    )


def new_image(
    image: str,
    parallelism: int = 1,
    delay_ms: int = 0,
    order: UpdateOrder = UpdateOrder.STOP_FIRST,
    failure_action: FailureAction = FailureAction.PAUSE,
    monitor_ms: int = 50,
    max_failure_ratio: float = 0.0,
) -> Callable[[ServiceSpec], None]:
    def change(spec: ServiceSpec) -> None:
        spec.task_template.container.image = image
        uc = spec.update_config
        uc.parallelism, uc.delay, uc.order = parallelism, delay_ms * MS, order
        uc.failure_action, uc.monitor, uc.max_failure_ratio = (
            failure_action,
            monitor_ms * MS,
            max_failure_ratio,
        )

    return change


def watch_running(store: Store, sid: str) -> list[int]:
    """Observed RUNNING task counts after every change (for availability invariants)."""
    seen: list[int] = []

    def on_events(_: list[Event]) -> None:
        seen.append(len(running(store, sid)))

    store.subscribe(on_events, [Task])
    return seen


def created_counter(store: Store) -> Counter[str]:
    seen: Counter[str] = Counter()

    def on_events(events: list[Event]) -> None:
        for ev in events:
            if ev.action is EventAction.CREATED and isinstance(ev.obj, Task):
                seen[ev.obj.service_id] += 1

    store.subscribe(on_events, [Task])
    return seen


async def deployed(h: Harness, n: int, nodes: int = 2) -> Service:
    for i in range(nodes):
        add_node(h.store, f"n{i + 1}")
    svc = create_service(h.store, "web", replicas=n)
    await wait_until(lambda: converged(h.store, svc.id, n, "img:1"))
    return svc


# ---------------------------------------------------------------------------------------------- order


def test_stop_first_never_more_than_parallelism_down() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 6)
        seen = watch_running(h.store, svc.id)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        update_service(h.store, svc.id, new_image("img:2", parallelism=2, delay_ms=40))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.UPDATING)
        assert status(h.store, svc.id).started_at > 0
        await wait_until(lambda: converged(h.store, svc.id, 6, "img:2"))
        elapsed = loop.time() - t0
        assert elapsed >= 0.08  # three batches of two, 40 ms apart
        assert min(seen) >= 4
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        st = service(h.store, svc.id).update_status
        assert st is not None and st.message == "update completed" and st.completed_at >= st.started_at
        spec_version = service(h.store, svc.id).spec_version
        assert all(t.spec_version == spec_version for t in live(h.store, svc.id))

    run(t)


def test_start_first_never_below_replicas() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 4)
        seen = watch_running(h.store, svc.id)
        update_service(h.store, svc.id, new_image("img:2", parallelism=2, order=UpdateOrder.START_FIRST))
        await wait_until(lambda: converged(h.store, svc.id, 4, "img:2"))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        assert min(seen) >= 4
        assert max(seen) > 4  # new tasks ran alongside the old ones

    run(t)


def test_parallelism_zero_updates_all_at_once() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 5)
        await h.sim.stop()  # workers frozen: nothing new starts, so only parallelism limits the batch
        update_service(h.store, svc.id, new_image("img:2", parallelism=0))
        await wait_until(lambda: sum(t.spec.container.image == "img:2" for t in live(h.store, svc.id)) == 5)
        h.sim.start()
        await wait_until(lambda: converged(h.store, svc.id, 5, "img:2"))

    run(t)


def test_scaling_is_not_an_update() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 2)
        before = {t.id for t in live(h.store, svc.id)}
        update_service(h.store, svc.id, scale(3))
        await wait_until(lambda: converged(h.store, svc.id, 3, "img:1"))
        await settle(0.08)
        assert before <= {t.id for t in live(h.store, svc.id)}
        assert state_of(h.store, svc.id) in (None, UpdateState.COMPLETED)

    run(t)


# ------------------------------------------------------------------------------------------- failures


def test_failure_action_pause_then_resume_on_next_update() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 4)
        h.sim.fail_images.add("bad")
        update_service(h.store, svc.id, new_image("bad", parallelism=1, delay_ms=20))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.PAUSED)
        st = service(h.store, svc.id).update_status
        assert st is not None
        assert st.message.startswith("update paused due to failure or early termination of task ")
        failed = st.message.rsplit(" ", 1)[1]
        failed_task = h.store.get(Task, failed)
        assert failed_task is not None and failed_task.spec.container.image == "bad"
        await settle(0.08)
        assert images(h.store, svc.id)["img:1"] == 3  # the rest was left alone
        update_service(h.store, svc.id, new_image("img:3", parallelism=2))
        await wait_until(lambda: converged(h.store, svc.id, 4, "img:3"))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)

    run(t)


def test_failure_action_continue() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 3)
        h.sim.fail_images.add("bad")
        update_service(
            h.store, svc.id, new_image("bad", parallelism=1, failure_action=FailureAction.CONTINUE)
        )
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        sv = service(h.store, svc.id).spec_version
        assert all(t.spec_version == sv for t in live(h.store, svc.id))

    run(t)


def test_max_failure_ratio_tolerates_some_failures() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 4)
        h.sim.reject_images.add("flaky")
        update_service(h.store, svc.id, new_image("flaky", parallelism=0, max_failure_ratio=0.5))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.PAUSED)  # 4/4 failed > 0.5

    run(t)


def test_failure_action_rollback() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 4)
        h.sim.fail_images.add("bad")
        update_service(
            h.store, svc.id, new_image("bad", parallelism=1, failure_action=FailureAction.ROLLBACK)
        )
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.ROLLBACK_STARTED)
        st = service(h.store, svc.id).update_status
        assert st is not None and st.message.startswith(
            "update rolled back due to failure or early termination"
        )
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.ROLLBACK_COMPLETED)
        st = service(h.store, svc.id).update_status
        assert st is not None and st.message == "rollback completed"
        s = service(h.store, svc.id)
        assert s.spec.task_template.container.image == "img:1" and s.previous_spec is None
        await wait_until(lambda: converged(h.store, svc.id, 4, "img:1"))

    run(t)


def test_manual_rollback() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 3)
        update_service(h.store, svc.id, new_image("img:2", parallelism=0))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        cur = service(h.store, svc.id)
        with h.store.local_batch() as tx:
            tx.update(apply_rollback(cur, h.store.clock()))
        assert state_of(h.store, svc.id) is UpdateState.ROLLBACK_STARTED
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.ROLLBACK_COMPLETED)
        await wait_until(lambda: converged(h.store, svc.id, 3, "img:1"))
        s = service(h.store, svc.id)
        assert s.previous_spec is not None and s.previous_spec.task_template.container.image == "img:2"
        assert s.update_status is not None and s.update_status.message == "rollback completed"

    run(t)


# ------------------------------------------------------------------------------------- disruptions


def test_leader_change_mid_update() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 6)
        created = created_counter(h.store)
        update_service(h.store, svc.id, new_image("img:2", parallelism=1, delay_ms=30))
        await wait_until(lambda: images(h.store, svc.id)["img:2"] >= 2)
        started = status(h.store, svc.id).started_at
        await h.restart_loops()
        await wait_until(lambda: images(h.store, svc.id)["img:2"] >= 4)
        await h.restart_loops()
        await wait_until(lambda: converged(h.store, svc.id, 6, "img:2"))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        assert status(h.store, svc.id).started_at == started
        assert created[svc.id] == 6  # one new task per slot, none duplicated

    run(t)


def test_drain_during_update() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 4)
        n1 = h.store.list(Task)[0].node_id
        update_service(h.store, svc.id, new_image("img:2", parallelism=1, delay_ms=30))
        await wait_until(lambda: images(h.store, svc.id)["img:2"] >= 1)
        set_node(h.store, n1, availability=NodeAvailability.DRAIN)
        await wait_until(lambda: converged(h.store, svc.id, 4, "img:2"))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        assert all(t.node_id != n1 for t in live(h.store, svc.id))

    run(t)


def test_node_down_during_update() -> None:
    async def t(h: Harness) -> None:
        svc = await deployed(h, 4)
        n1 = h.store.list(Task)[0].node_id
        update_service(h.store, svc.id, new_image("img:2", parallelism=1, delay_ms=30))
        await wait_until(lambda: images(h.store, svc.id)["img:2"] >= 1)
        h.sim.silent_nodes.add(n1)
        set_node(h.store, n1, state=NodeState.DOWN)
        await wait_until(lambda: converged(h.store, svc.id, 4, "img:2"))
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        assert all(t.node_id != n1 for t in live(h.store, svc.id))

    run(t)


def test_global_rolling_update() -> None:
    async def t(h: Harness) -> None:
        for i in range(3):
            add_node(h.store, f"n{i}")
        svc = create_service(h.store, "agent", mode=ServiceMode.GLOBAL)
        await wait_until(lambda: images(h.store, svc.id)["img:1"] == 3)
        seen = watch_running(h.store, svc.id)
        update_service(h.store, svc.id, new_image("img:2", parallelism=1))
        await wait_until(
            lambda: images(h.store, svc.id) == Counter({"img:2": 3}) and len(live(h.store, svc.id)) == 3
        )
        await wait_until(lambda: state_of(h.store, svc.id) is UpdateState.COMPLETED)
        assert min(seen) >= 2

    run(t)
