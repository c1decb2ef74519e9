"""What a new leader's orchestrator does first (SwarmKit's ``taskinit.CheckTasks``).

Everything the previous leader held in memory is rebuilt from the store: tasks of vanished services are
deleted, tasks needing a restart are queued (``handle``), delayed starts are re-armed from each waiting
task's timestamp (or started now if their delay is over), and restart counts are re-derived from the
task history of each slot.
"""

from __future__ import annotations

from collections.abc import Callable

from agents.manager.orchestrator.restart import HistoryKey, RestartSupervisor, history_key
from agents.manager.orchestrator.tasks import seconds
from agents.manager.orchestrator.writer import Writer
from agents.state.objects import Service, Task, TaskState
from agents.state.store import Store
from agents.state.tx import Tx


async def check_tasks(
    store: Store,
    writer: Writer,
    restarts: RestartSupervisor,
    related: Callable[[Service], bool],
    handle: Callable[[Task], None],
) -> None:
    delayed: list[tuple[str, float]] = []

    def build(tx: Tx) -> bool:
        delayed.clear()
        now = store.clock()
        for t in store.list(Task):
            if not t.service_id:
                continue
            service = store.get(Service, t.service_id)
            if service is None:
                if tx.get(Task, t.id) is not None:
                    tx.delete(Task, t.id)
                continue
            if not related(service):
                continue
            handle(t)
            if t.desired_state is not TaskState.READY or t.status.state > TaskState.COMPLETE:
                continue
            delay = seconds(t.spec.restart_policy.delay)
            remaining = min(delay, t.status.timestamp + delay - now)
            if remaining > 0:
                delayed.append((t.id, remaining))
            else:
                restarts.start_now(tx, t.id)
        return True

    if not await writer.update(build):
        return
    for tid, remaining in delayed:
        current = store.get(Task, tid)
        if current is not None and current.desired_state is TaskState.READY:
            restarts.delay_start(None, tid, remaining, True)
    _rebuild_history(store, restarts, related)


def _rebuild_history(store: Store, restarts: RestartSupervisor, related: Callable[[Service], bool]) -> None:
    """Every task after the first at a slot's newest spec version was a restart."""
    slots: dict[HistoryKey, list[Task]] = {}
    services: dict[str, Service] = {}
    for t in store.list(Task):
        service = store.get(Service, t.service_id) if t.service_id else None
        if service is None or not related(service):
            continue
        services[service.id] = service
        slots.setdefault(history_key(service, t), []).append(t)
    for (service_id, _, _), tasks in slots.items():
        newest = max(t.spec_version for t in tasks)
        current = sorted((t for t in tasks if t.spec_version == newest), key=lambda t: t.meta.created_at)
        for t in current[1:]:
            restarts.record_restart(services[service_id], t)
