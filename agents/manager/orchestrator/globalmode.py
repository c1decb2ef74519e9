"""Global services: one task per eligible node (SwarmKit's ``orchestrator/global``).

A node is eligible when it is READY, not drained, and satisfies the service's placement constraints;
its task is created with ``node_id`` already set (the scheduler still takes it PENDING -> ASSIGNED).
Tasks on nodes that go down, are drained, stop matching (labels changed) are shut down; tasks of a
removed node are deleted; a paused node keeps what it runs but gets nothing new. Node and service
changes simply re-reconcile every global service: classrooms have a handful of nodes and services.
"""

from __future__ import annotations

from agents.manager.loop import Committer
from agents.manager.orchestrator.base import Orchestrator
from agents.manager.orchestrator.restart import PlannedRestart
from agents.manager.orchestrator.tasks import (
    constraints_match,
    invalid_node,
    is_global,
    is_live,
    new_task,
    set_desired,
)
from agents.state.objects import Node, NodeAvailability, NodeState, Service, Task, TaskState
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import Event, EventAction


class GlobalOrchestrator(Orchestrator):
    name = "global-orchestrator"

    def __init__(
        self, store: Store, committer: Committer, *, task_timeout: float = 60.0, retry_interval: float = 0.5
    ) -> None:
        super().__init__(store, committer, task_timeout=task_timeout, retry_interval=retry_interval)
        self.removed_nodes: set[str] = set()

    def related(self, service: Service | None) -> bool:
        return is_global(service)

    # ---------------------------------------------------------------------------------------- events

    def handle_event(self, event: Event) -> None:
        obj = event.obj
        if isinstance(obj, Service):
            self.service_event(event)
        elif isinstance(obj, Node):
            if event.action is EventAction.REMOVED:
                self.removed_nodes.add(obj.id)
            self._all_services_dirty()
        elif isinstance(obj, Task):
            if event.action is EventAction.REMOVED:
                self.restarts.cancel(obj.id)
                if obj.desired_state <= TaskState.RUNNING:
                    service = self.store.get(Service, obj.service_id)
                    if self.related(service) and is_live(service):
                        self.dirty_services.add(obj.service_id)
            else:
                self.handle_task_change(obj)

    def _all_services_dirty(self) -> None:
        for s in self.store.list(Service):
            if self.related(s) and is_live(s):
                self.dirty_services.add(s.id)

    def handle_task_change(self, task: Task) -> None:
        service = self.store.get(Service, task.service_id)
        if not self.related(service) or not is_live(service):
            return
        if task.desired_state <= TaskState.RUNNING and task.status.state > TaskState.RUNNING:
            self.restart_tasks.add(task.id)

    def _pending(self) -> bool:
        return super()._pending() or bool(self.removed_nodes)

    # ------------------------------------------------------------------------------------- actions

    async def tick(self) -> None:
        await self._delete_tasks_of_removed_nodes()
        await super().tick()

    async def _delete_tasks_of_removed_nodes(self) -> None:
        ids, self.removed_nodes = self.removed_nodes, set()
        if not ids:
            return

        def build(tx: Tx) -> bool:
            for nid in ids:
                if tx.get(Node, nid) is not None:
                    continue
                for t in tx.tasks_by_node(nid):
                    if self.related(tx.get(Service, t.service_id)):
                        self.restarts.cancel(t.id)
                        tx.delete(Task, t.id)
            return True

        if not await self.writer.update(build):
            self.removed_nodes |= ids

    def restart_one(self, tx: Tx, task: Task, service: Service) -> PlannedRestart | None:
        node = tx.get(Node, task.node_id)
        if node is None or invalid_node(node):
            return None  # the reconcile pass shuts it down
        if node.spec.availability is NodeAvailability.PAUSE or not constraints_match(service, node):
            set_desired(tx, task.id, TaskState.SHUTDOWN)
            return None
        return self.restarts.restart(tx, self.cluster(tx), service, task, self.store.clock())

    def reconcile(self, tx: Tx, service: Service) -> bool:
        by_node: dict[str, list[Task]] = {}
        for t in tx.tasks_by_service(service.id):
            by_node.setdefault(t.node_id, []).append(t)
        live_by_node = {
            nid: live
            for nid, tasks in by_node.items()
            if (live := self.restarts.updatable_tasks_in_slot(tasks, service))
        }
        cluster, now = self.cluster(tx), self.store.clock()
        for node in tx.list(Node):
            tasks = live_by_node.pop(node.id, [])
            if invalid_node(node) or not constraints_match(service, node):
                _shutdown(tx, tasks)
            elif node.spec.availability is NodeAvailability.PAUSE:
                continue
            elif not tasks and node.status.state is NodeState.READY:
                tx.create(new_task(cluster, service, 0, node.id, now))
        for tasks in live_by_node.values():  # unassigned or on nodes that no longer exist
            _shutdown(tx, tasks)
        return True


def _shutdown(tx: Tx, tasks: list[Task]) -> None:
    for t in tasks:
        set_desired(tx, t.id, TaskState.SHUTDOWN)
