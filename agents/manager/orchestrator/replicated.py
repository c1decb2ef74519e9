"""Replicated services: keep slots 1..replicas filled (SwarmKit's ``orchestrator/replicated``).

A slot is filled by any task whose desired state is at most RUNNING (or, when the restart policy gives
up on it, by its last task), so a new leader counts exactly what the old one created: nothing is lost
or duplicated. Scaling down shuts down the highest slots first, preferring tasks on the nodes that run
the most tasks of the service. Slots with no task meant to run are refilled (lowest numbers first) or,
beyond the replica count, deleted once their tasks have stopped.

Tasks on a node that goes down, is drained or removed are restarted (old desired SHUTDOWN, replacement
in the same slot), as SwarmKit's ``restartTasksByNodeID``.
"""

from __future__ import annotations

from collections import Counter

from agents.manager.orchestrator.base import Orchestrator
from agents.manager.orchestrator.restart import PlannedRestart
from agents.manager.orchestrator.tasks import (
    invalid_node,
    is_live,
    is_replicated,
    new_task,
    set_desired,
)
from agents.state.objects import Node, Service, Task, TaskState
from agents.state.tx import Tx
from agents.state.watch import Event, EventAction

SCALE_DOWN_STATE = TaskState.SHUTDOWN
"""Desired state of tasks removed by scaling down. (SwarmKit since 2018 uses REMOVE, after which the
reaper deletes them; here they stay SHUTDOWN and their dead slots are deleted once they have stopped,
which looks the same in ``docker service ps`` after a moment.)"""


class ReplicatedOrchestrator(Orchestrator):
    name = "replicated-orchestrator"

    def related(self, service: Service | None) -> bool:
        return is_replicated(service)

    # ---------------------------------------------------------------------------------------- events

    def handle_event(self, event: Event) -> None:
        obj = event.obj
        if isinstance(obj, Service):
            self.service_event(event)
        elif isinstance(obj, Node):
            if event.action is EventAction.REMOVED or invalid_node(obj):
                self._restart_tasks_on_node(obj.id)
        elif isinstance(obj, Task):
            if event.action is EventAction.REMOVED:
                self.restarts.cancel(obj.id)
                if obj.desired_state <= TaskState.RUNNING:
                    service = self.store.get(Service, obj.service_id)
                    if self.related(service) and is_live(service):
                        self.dirty_services.add(obj.service_id)
            else:
                self.handle_task_change(obj)

    def _restart_tasks_on_node(self, node_id: str) -> None:
        for t in self.store.tasks_by_node(node_id):
            if t.desired_state <= TaskState.RUNNING and self.related(self.store.get(Service, t.service_id)):
                self.restart_tasks.add(t.id)

    def handle_task_change(self, task: Task) -> None:
        service = self.store.get(Service, task.service_id)
        if not self.related(service) or not is_live(service):
            return
        assert service is not None
        if task.desired_state > TaskState.RUNNING:
            if task.status.state > TaskState.RUNNING and task.slot > service.spec.replicas:
                self.dirty_services.add(service.id)  # a scaled-down slot has stopped: delete it
            return
        node = self.store.get(Node, task.node_id) if task.node_id else None
        if task.status.state > TaskState.RUNNING or (task.node_id and invalid_node(node)):
            self.restart_tasks.add(task.id)

    # ------------------------------------------------------------------------------------- actions

    def restart_one(self, tx: Tx, task: Task, service: Service) -> PlannedRestart | None:
        return self.restarts.restart(tx, self.cluster(tx), service, task, self.store.clock())

    def reconcile(self, tx: Tx, service: Service) -> bool:
        by_slot: dict[int, list[Task]] = {}
        for t in tx.tasks_by_service(service.id):
            by_slot.setdefault(t.slot, []).append(t)
        running: dict[int, list[Task]] = {}
        dead: dict[int, list[Task]] = {}
        for slot, tasks in by_slot.items():
            live = self.restarts.updatable_tasks_in_slot(tasks, service)
            if live:
                running[slot] = live
            else:
                dead[slot] = tasks
        want = service.spec.replicas
        if want > len(running):
            cluster, now = self.cluster(tx), self.store.clock()
            slot = 0
            for _ in range(want - len(running)):
                slot += 1
                while slot in running:
                    slot += 1
                dead.pop(slot, None)
                tx.create(new_task(cluster, service, slot, "", now))
        elif want < len(running):
            for tasks in _scale_down_order(list(running.values()))[want:]:
                for t in tasks:
                    set_desired(tx, t.id, SCALE_DOWN_STATE)
        for tasks in dead.values():
            for t in tasks:
                if t.status.state > TaskState.RUNNING or t.status.state < TaskState.ASSIGNED:
                    tx.delete(Task, t.id)
        return True


def _scale_down_order(slots: list[list[Task]]) -> list[list[Task]]:
    """Slots to keep first: running ones, low slot numbers, and spread across nodes (the n-th task of a
    node ranks n-th), so the tail (removed) is the highest slots on the busiest nodes, unassigned last."""
    slots.sort(key=lambda s: (not any(t.status.state is TaskState.RUNNING for t in s), s[0].slot))
    per_node: Counter[str] = Counter()
    ranked: list[tuple[int, list[Task]]] = []
    for s in slots:
        if len(s) == 1 and s[0].node_id:
            per_node[s[0].node_id] += 1
            ranked.append((per_node[s[0].node_id], s))
        else:
            ranked.append((-1, s))
    ranked.sort(key=lambda r: (r[0] < 0, r[0]))
    return [s for _, s in ranked]
