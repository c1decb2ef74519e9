"""The event loop both orchestrators share: watch, collect work, then act on it in one pass (a "tick").

Like SwarmKit's orchestrators, events only mark work (services to reconcile, tasks to restart, services
whose tasks must go); ``tick`` does it with fresh reads, so a burst of events costs one pass and nothing
depends on having seen every event. A new leader (or a watch that fell behind) starts with a full pass
over the store. Work whose changeset could not be committed stays queued and is retried.
"""

from __future__ import annotations

import logging
from abc import abstractmethod

from agents.manager.loop import Committer, ControlLoop
from agents.manager.orchestrator.restart import PlannedRestart, RestartSupervisor
from agents.manager.orchestrator.taskinit import check_tasks
from agents.manager.orchestrator.tasks import cluster_of, is_live, set_desired
from agents.manager.orchestrator.writer import Writer, get_within
from agents.manager.updater import UpdateSupervisor
from agents.state.objects import Cluster, Node, Service, Task, TaskState
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import Event, EventAction, WatchClosed

log = logging.getLogger(__name__)


class Orchestrator(ControlLoop):
    """Base of the replicated and global orchestrators (one restart and one update supervisor each)."""

    KINDS = (Service, Task, Node, Cluster)

    def __init__(
        self, store: Store, committer: Committer, *, task_timeout: float = 60.0, retry_interval: float = 0.5
    ) -> None:
        super().__init__(store, committer)
        self.writer = Writer(store, committer)
        self.restarts = RestartSupervisor(store, self.writer, task_timeout)
        self.restarts.restart_hook = self.restart_one
        self.updater = UpdateSupervisor(store, self.writer, self.restarts)
        self.retry_interval = retry_interval
        self.dirty_services: set[str] = set()
        self.restart_tasks: set[str] = set()
        self.removed_services: set[str] = set()

    # ---------------------------------------------------------------------------------- mode hooks

    @abstractmethod
    def related(self, service: Service | None) -> bool:
        """Is this a service of this orchestrator's mode?"""

    @abstractmethod
    def handle_event(self, event: Event) -> None:
        """Mark the work an event implies."""

    @abstractmethod
    def handle_task_change(self, task: Task) -> None:
        """Queue a restart if the task stopped while meant to run (also used at start-up)."""

    @abstractmethod
    def reconcile(self, tx: Tx, service: Service) -> bool:
        """Bring the service's tasks in line with its spec (creates, shutdowns, deletes) inside ``tx``."""

    @abstractmethod
    def restart_one(self, tx: Tx, task: Task, service: Service) -> PlannedRestart | None:
        """Restart (or just shut down) one task queued for restart."""

    # ----------------------------------------------------------------------------------------- loop

    async def run(self) -> None:
        try:
            while True:
                q = self.store.watch_queue(self.KINDS)
                try:
                    await self._init()
                    await self.tick()
                    while True:
                        timeout = self.retry_interval if self._pending() else None
                        first = await get_within(q, timeout)
                        if first is not None:
                            for ev in [first, *q.drain()]:
                                self.handle_event(ev)
                        await self.tick()
                except WatchClosed:
                    log.info("%s: watch fell behind, resynchronising from the store", self.name)
                finally:
                    q.close()
        finally:
            self.restarts.cancel_all()
            await self.updater.cancel_all()

    async def _init(self) -> None:
        for s in self.store.list(Service):
            if self.related(s) and is_live(s):
                self.dirty_services.add(s.id)
        await check_tasks(self.store, self.writer, self.restarts, self.related, self.handle_task_change)

    def _pending(self) -> bool:
        return bool(self.dirty_services or self.restart_tasks or self.removed_services)

    def service_event(self, event: Event) -> None:
        """Common handling of service events for the orchestrator's mode."""
        svc = event.obj
        assert isinstance(svc, Service)
        if not self.related(svc):
            return
        if event.action is EventAction.REMOVED or svc.pending_delete:
            self.removed_services.add(svc.id)
        else:
            self.dirty_services.add(svc.id)

    async def tick(self) -> None:
        await self._remove_services()
        await self._restart()
        await self._reconcile_all()

    async def _remove_services(self) -> None:
        """A deleted service's tasks all get desired state REMOVE; the task reaper deletes them once
        stopped."""
        ids, self.removed_services = self.removed_services, set()
        if not ids:
            return
        for sid in ids:
            self.restarts.clear_service_history(sid)
            self.dirty_services.discard(sid)
            await self.updater.cancel(sid)

        def build(tx: Tx) -> bool:
            for sid in ids:
                if is_live(tx.get(Service, sid)):
                    continue
                for t in tx.tasks_by_service(sid):
                    self.restarts.cancel(t.id)
                    set_desired(tx, t.id, TaskState.REMOVE)
            return True

        if not await self.writer.update(build):
            self.removed_services |= ids

    async def _restart(self) -> None:
        ids, self.restart_tasks = self.restart_tasks, set()
        if not ids:
            return
        planned: list[tuple[Service, PlannedRestart]] = []

        def build(tx: Tx) -> bool:
            planned.clear()
            for tid in ids:
                t = tx.get(Task, tid)
                if t is None or t.desired_state > TaskState.RUNNING:
                    continue
                service = tx.get(Service, t.service_id)
                if service is None or not self.related(service) or not is_live(service):
                    continue
                p = self.restart_one(tx, t, service)
                if p is not None:
                    planned.append((service, p))
            return True

        if not await self.writer.update(build):
            self.restart_tasks |= ids
            return
        for service, p in planned:
            self.restarts.after_commit(service, p)

    async def _reconcile_all(self) -> None:
        ids, self.dirty_services = self.dirty_services, set()
        for sid in ids:

            def build(tx: Tx, sid: str = sid) -> bool:
                service = tx.get(Service, sid)
                if service is None or not self.related(service) or not is_live(service):
                    return True
                return self.reconcile(tx, service)

            if not await self.writer.update(build):
                self.dirty_services.add(sid)
                continue
            service = self.store.get(Service, sid)
            if service is not None and self.related(service) and is_live(service):
                await self.updater.update(service)

    def cluster(self, tx: Tx) -> Cluster | None:
        return cluster_of(tx)
