"""Task reaper: bounded task history, and deletion of tasks nobody needs (SwarmKit's ``taskreaper``).

* History: a slot (a node, for global services) keeps at most ``task_history_retention_limit`` tasks
  (cluster setting, default 5; ``max_attempts + 1`` when the restart policy sets ``max_attempts``),
  counting the live one as SwarmKit does, so ``docker service ps`` shows at most 5 lines per slot; the
  oldest stopped (or never-run) tasks go first. A negative limit keeps everything.
* Removal: tasks with desired state REMOVE (their service was deleted) are deleted once they have stopped
  or if they were never assigned; so are orphaned tasks without a service, and stopped tasks whose
  service no longer exists.

Deletions are batched (``batch_interval``) so a burst of task events costs one changeset.
"""

from __future__ import annotations

import asyncio
import logging

from agents.manager.loop import Committer, ControlLoop
from agents.manager.orchestrator.tasks import by_timestamp, cluster_of, is_global
from agents.manager.orchestrator.writer import Writer, get_within
from agents.state.objects import Cluster, Service, Task, TaskState
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import Event, EventAction, WatchClosed, WatchQueue

log = logging.getLogger(__name__)

DirtyKey = tuple[str, int, str]
"""(service id, slot, node id): one slot's (or one global node's) history."""

MAX_DIRTY = 1000


def removable(task: Task) -> bool:
    """A task that may be deleted now that nobody wants it: stopped, or never handed to a node."""
    return task.status.state < TaskState.ASSIGNED or task.status.state >= TaskState.COMPLETE


def _never_runs(task: Task) -> bool:
    return task.status.state < TaskState.ASSIGNED and task.desired_state > TaskState.RUNNING


class TaskReaper(ControlLoop):
    name = "task-reaper"

    def __init__(self, store: Store, committer: Committer, *, batch_interval: float = 0.25) -> None:
        super().__init__(store, committer)
        self.writer = Writer(store, committer)
        self.batch_interval = batch_interval
        self.dirty: set[DirtyKey] = set()
        self.cleanup: set[str] = set()

    async def run(self) -> None:
        while True:
            q = self.store.watch_queue([Task, Service, Cluster])
            try:
                self._initial_scan()
                await self.tick()
                while True:
                    first = await q.get()
                    self._handle_all([first, *q.drain()])
                    await self._gather(q)
                    await self.tick()
            except WatchClosed:
                log.info("task reaper: watch fell behind, rescanning")
            finally:
                q.close()

    async def _gather(self, q: WatchQueue) -> None:
        """Keep collecting events for ``batch_interval`` (or until there is a lot to do)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_interval
        while len(self.dirty) + len(self.cleanup) <= MAX_DIRTY:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            first = await get_within(q, remaining)
            if first is None:
                return
            self._handle_all([first, *q.drain()])

    def _handle_all(self, events: list[Event]) -> None:
        for ev in events:
            self._handle(ev.action, ev.obj)

    def _initial_scan(self) -> None:
        """A new leader: everything the old one had not got round to."""
        for t in self.store.list(Task):
            self._check_removal(t)
            self.dirty.add((t.service_id, t.slot, t.node_id))

    def _handle(self, action: EventAction, obj: object) -> None:
        if isinstance(obj, Task):
            if action is EventAction.CREATED:
                self.dirty.add((obj.service_id, obj.slot, obj.node_id))
            elif action is EventAction.UPDATED:
                self._check_removal(obj)
        elif isinstance(obj, Service) and action is EventAction.REMOVED:
            for t in self.store.tasks_by_service(obj.id):
                self._check_removal(t)

    def _check_removal(self, t: Task) -> None:
        if not t.service_id:
            if t.status.state >= TaskState.ORPHANED:
                self.cleanup.add(t.id)
            return
        wanted_gone = t.desired_state is TaskState.REMOVE and removable(t)
        if wanted_gone or (
            t.status.state > TaskState.RUNNING and self.store.get(Service, t.service_id) is None
        ):
            self.cleanup.add(t.id)

    async def tick(self) -> None:
        delete = set(self.cleanup)
        self.cleanup.clear()
        limit = self._retention()
        for key in list(self.dirty):
            if self._history_excess(key, limit, delete):
                self.dirty.discard(key)
        if not delete:
            return

        def build(tx: Tx) -> bool:
            for tid in delete:
                if tx.get(Task, tid) is not None:
                    tx.delete(Task, tid)
            return True

        if not await self.writer.update(build):
            self.cleanup |= delete

    def _retention(self) -> int:
        cluster = cluster_of(self.store)
        return cluster.spec.orchestration.task_history_retention_limit if cluster is not None else 5

    def _history_excess(self, key: DirtyKey, limit: int, delete: set[str]) -> bool:
        """Add the slot's surplus old tasks to ``delete``; True when the slot needs no further look."""
        service_id, slot, node_id = key
        service = self.store.get(Service, service_id)
        if service is None:
            return True
        policy = service.spec.task_template.restart_policy
        if policy.max_attempts > 0:
            limit = policy.max_attempts + 1
        if limit < 0:
            return True
        if is_global(service):
            tasks = self.store.tasks_by_service_node(service_id, node_id)
        else:
            tasks = self.store.tasks_by_slot(service_id, slot)
        if len(tasks) <= limit:
            return True
        excess = len(tasks) - limit
        live = 0
        for t in by_timestamp(tasks):
            if t.status.state > TaskState.RUNNING or _never_runs(t):
                if excess > 0:
                    delete.add(t.id)
                    excess -= 1
            else:
                live += 1
        return live <= 1
