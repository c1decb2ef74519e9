"""Rolling updates and rollbacks of a service's tasks (SwarmKit's ``orchestrator/update``).

Each orchestrator owns an ``UpdateSupervisor`` and calls ``update(service)`` after reconciling it. The
``Updater`` it starts finds the slots whose tasks run an older spec (``is_task_dirty``) or hold more than
one task, and rolls them ``parallelism`` at a time (0 = all), waiting ``delay`` after each slot:

* stop-first: the old task's desired state goes to SHUTDOWN and the new task is created desired READY in
  the same changeset; it is started (desired RUNNING) once the old one has stopped;
* start-first: the new task is started at once and the old one shut down when the new one runs.

A new task that fails before running, or within ``monitor`` of running, counts as a failure (a task
stopped on purpose, e.g. by a drain, does not); above
``max_failure_ratio`` of the slots, ``failure_action`` applies: pause (``PAUSED``), continue, or
rollback (``previous_spec`` becomes the spec again, ``ROLLBACK_STARTED``; the orchestrator then runs a
rollback with ``rollback_config``). After the last slot, the updater watches for ``monitor`` before
marking the update ``COMPLETED`` (``ROLLBACK_COMPLETED``).

Nothing is kept that the store does not hold: a new leader's orchestrator calls ``update`` for every
service, and the updater re-derives which slots still run the old spec.

The API side (``docker service update``) must, as SwarmKit's control API does, record the spec change
with ``apply_spec_update`` (previous spec kept, ``spec_version`` moved, ``update_status`` cleared: this
is also what resumes a paused update) and ``--rollback`` with ``apply_rollback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agents.manager.orchestrator.restart import RestartSupervisor
from agents.manager.orchestrator.tasks import (
    SlotKey,
    cluster_of,
    invalid_node,
    is_live,
    is_task_dirty,
    new_task,
    runnable,
    runnable_slots,
    seconds,
    set_desired,
    slot_tasks,
)
from agents.manager.orchestrator.writer import Writer, wait_event, wait_for
from agents.state.objects import (
    FailureAction,
    Node,
    Service,
    ServiceSpec,
    Task,
    TaskState,
    UpdateOrder,
    UpdateState,
    UpdateStatus,
)
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import EventAction, WatchClosed

log = logging.getLogger(__name__)

PAUSED_STATES = (UpdateState.PAUSED, UpdateState.ROLLBACK_PAUSED)
ACTIVE_STATES = (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED)


# ------------------------------------------------------------------------------------------ API helpers


def apply_spec_update(service: Service, spec: ServiceSpec) -> Service:
    """A copy of ``service`` carrying a user's new spec, as SwarmKit's ``UpdateService`` records it."""
    out = service.copy()
    out.previous_spec = service.spec.copy()
    out.previous_spec_version = service.spec_version
    out.spec = spec.copy()
    out.spec_version = service.meta.version
    out.update_status = None
    return out


def apply_rollback(service: Service, now: float) -> Service:
    """A copy of ``service`` for ``docker service update --rollback``: spec and previous spec swap.
    Raises ``ValueError`` with Docker's message when there is nothing to roll back to."""
    if service.previous_spec is None:
        raise ValueError(f"service {service.id} does not have a previous spec")
    out = service.copy()
    assert out.previous_spec is not None
    out.spec, out.previous_spec = out.previous_spec, out.spec
    out.spec_version, out.previous_spec_version = service.previous_spec_version, service.spec_version
    out.update_status = UpdateStatus(
        state=UpdateState.ROLLBACK_STARTED, started_at=now, message="manually requested rollback"
    )
    return out


# ------------------------------------------------------------------------------------------ supervisor


class UpdateSupervisor:
    """At most one updater per service; a changed spec replaces the running one."""

    def __init__(self, store: Store, writer: Writer, restarts: RestartSupervisor) -> None:
        self.store = store
        self.writer = writer
        self.restarts = restarts
        self._updates: dict[str, Updater] = {}

    async def update(self, service: Service) -> None:
        current = self._updates.get(service.id)
        if current is not None and current.running:
            if current.spec == service.spec:
                return
            await current.cancel()
        updater = Updater(self.store, self.writer, self.restarts, service.copy())
        self._updates[service.id] = updater
        updater.start()

    def updating(self, service_id: str) -> bool:
        u = self._updates.get(service_id)
        return u is not None and u.running

    async def cancel(self, service_id: str) -> None:
        u = self._updates.pop(service_id, None)
        if u is not None:
            await u.cancel()

    async def cancel_all(self) -> None:
        updates, self._updates = list(self._updates.values()), {}
        for u in updates:
            await u.cancel()


# ------------------------------------------------------------------------------------------- updater


class Updater:
    """One rolling update of one service to the spec it was created with."""

    def __init__(self, store: Store, writer: Writer, restarts: RestartSupervisor, service: Service) -> None:
        self.store = store
        self.writer = writer
        self.restarts = restarts
        self.service = service
        self.spec = service.spec
        status = service.update_status
        self.rolling_back = status is not None and status.state is UpdateState.ROLLBACK_STARTED
        self.config = self.spec.rollback_config if self.rolling_back else self.spec.update_config
        self.monitor = seconds(self.config.monitor)
        self._task: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._halt = asyncio.Event()
        self._started: dict[str, float | None] = {}
        """New task id -> loop time it reached RUNNING (None until then)."""
        self._failed: set[str] = set()
        self._total = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"update-{self.service.id}")

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("update of service %s failed", self.service.id)
        finally:
            for w in list(self._workers):
                w.cancel()

    async def run(self) -> None:
        service, status = self.service, self.service.update_status
        if status is not None and status.state in PAUSED_STATES:
            return
        slots = runnable_slots(self.store, service)
        dirty = [k for k in sorted(slots, key=_slot_order) if self._slot_dirty(slots[k])]
        if not dirty:
            if status is not None and status.state in ACTIVE_STATES:
                await self._set_status(self._complete)
            return
        if status is None:
            await self._set_status(self._begin)
        self._total = len(dirty)
        parallelism = self.config.parallelism or len(dirty)
        watcher = None
        if self.config.failure_action is not FailureAction.CONTINUE:
            watcher = asyncio.get_running_loop().create_task(self._watch_failures())
        try:
            sem = asyncio.Semaphore(parallelism)
            for key in dirty:
                if not await self._acquire(sem):
                    break
                w = asyncio.get_running_loop().create_task(self._worker(key, sem))
                self._workers.add(w)
                w.add_done_callback(self._workers.discard)
            if self._workers:
                await asyncio.wait(list(self._workers))
            if not self._halt.is_set():
                monitor, delay = self.monitor, seconds(self.config.delay)
                if delay >= monitor:
                    monitor = delay + 1.0
                await wait_event(self._halt, monitor)
            if not self._halt.is_set():
                await self._set_status(self._complete)
        finally:
            if watcher is not None:
                watcher.cancel()

    def _slot_dirty(self, tasks: list[Task]) -> bool:
        return len(tasks) > 1 or is_task_dirty(self.service, tasks[0], self._node(tasks[0]))

    def _node(self, task: Task) -> Node | None:
        return self.store.get(Node, task.node_id) if task.node_id else None

    async def _acquire(self, sem: asyncio.Semaphore) -> bool:
        """A free worker, unless the update is halted first."""
        if self._halt.is_set():
            return False
        acquire = asyncio.ensure_future(sem.acquire())
        halt = asyncio.ensure_future(self._halt.wait())
        try:
            await asyncio.wait([acquire, halt], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.cancel()
            if not acquire.done():
                acquire.cancel()
        if self._halt.is_set():
            if acquire.done() and not acquire.cancelled():
                sem.release()
            return False
        return True

    # -------------------------------------------------------------------------------------- one slot

    async def _worker(self, key: SlotKey, sem: asyncio.Semaphore) -> None:
        try:
            await self._update_slot(key)
            delay = seconds(self.config.delay)
            if delay > 0 and not self._halt.is_set():
                await wait_event(self._halt, delay)
        finally:
            sem.release()

    async def _update_slot(self, key: SlotKey) -> None:
        service = self.service
        tasks = runnable(slot_tasks(self.store, service, key))
        if not tasks:
            return  # scaled away or replaced meanwhile
        if isinstance(key, str) and invalid_node(self.store.get(Node, key)):
            return  # the global orchestrator shuts it down
        existing: Task | None = None
        for t in tasks:
            if not is_task_dirty(service, t, self._node(t)):
                if t.desired_state is TaskState.RUNNING:
                    existing = t
                    break
                if t.desired_state < TaskState.RUNNING:
                    existing = t
        if existing is not None:
            await self._use_existing(tasks, existing)
            return
        slot, node_id = (0, key) if isinstance(key, str) else (key, "")
        new = new_task(cluster_of(self.store), service, slot, node_id, self.store.clock())
        new.desired_state = TaskState.READY
        start_first = self.config.order is UpdateOrder.START_FIRST
        self._started[new.id] = None
        stopped: list[Task | None] = [None]

        def build(tx: Tx) -> bool:
            if not is_live(tx.get(Service, service.id)):
                return False
            tx.create(new)
            if not start_first:
                stopped[0] = _shutdown(tx, tasks)
            return True

        if not await self.writer.update(build):
            return
        delayed = self.restarts.delay_start(stopped[0], new.id, 0, not start_first)
        await asyncio.wait([delayed])
        await wait_for(self.store, lambda: _settled(self.store.get(Task, new.id)), (Task,))
        now_task = self.store.get(Task, new.id)
        if now_task is not None and now_task.status.state >= TaskState.RUNNING:
            self._started[new.id] = asyncio.get_running_loop().time()
        if start_first and now_task is not None and now_task.status.state is TaskState.RUNNING:
            await self.writer.update(lambda tx: _shutdown(tx, tasks) or True)

    async def _use_existing(self, tasks: list[Task], existing: Task) -> None:
        """The slot already has a task at the new spec (e.g. a previous leader got this far): keep it,
        shut the others down, and start it if it was waiting."""
        others = [t for t in tasks if t.id != existing.id]
        if not others and existing.desired_state is TaskState.RUNNING:
            return
        stopped: list[Task | None] = [None]

        def build(tx: Tx) -> bool:
            stopped[0] = _shutdown(tx, others)
            return True

        if not await self.writer.update(build):
            return
        if existing.desired_state is not TaskState.RUNNING:
            await asyncio.wait([self.restarts.delay_start(stopped[0], existing.id, 0, True)])

    # -------------------------------------------------------------------------------------- failures

    async def _watch_failures(self) -> None:
        while True:
            q = self.store.watch_queue([Task])
            try:
                while True:
                    first = await q.get()
                    for ev in [first, *q.drain()]:
                        t = ev.obj
                        if (
                            ev.action is EventAction.UPDATED
                            and isinstance(t, Task)
                            and t.service_id == self.service.id
                            and t.status.state > TaskState.RUNNING
                            and t.desired_state <= TaskState.RUNNING  # not stopped on purpose (drain…)
                            and await self._failure(t)
                        ):
                            return
            except WatchClosed:
                continue
            finally:
                q.close()

    async def _failure(self, task: Task) -> bool:
        """Count a failed new task; True when it triggered the failure action."""
        if task.id in self._failed or task.id not in self._started:
            return False
        started = self._started[task.id]
        if started is not None and asyncio.get_running_loop().time() - started > self.monitor:
            return False
        self._failed.add(task.id)
        if len(self._failed) / self._total <= self.config.max_failure_ratio:
            return False
        action = self.config.failure_action
        if action is FailureAction.PAUSE or (action is FailureAction.ROLLBACK and self.rolling_back):
            self._halt.set()
            what = "rollback" if action is FailureAction.ROLLBACK else "update"
            msg = f"{what} paused due to failure or early termination of task {task.id}"
            await self._set_status(lambda s: self._pause(s, msg))
            return True
        if action is FailureAction.ROLLBACK:
            self._halt.set()
            msg = f"update rolled back due to failure or early termination of task {task.id}"
            await self._set_status(lambda s: self._rollback(s, msg))
            return True
        return False

    # ---------------------------------------------------------------------------------------- status

    async def _set_status(self, mutate: Callable[[Service], bool]) -> None:
        """Change the stored service's update status, unless its spec moved on (a newer update owns it)."""

        def build(tx: Tx) -> bool:
            cur = tx.get(Service, self.service.id)
            if cur is None or cur.spec != self.spec:
                return True
            s = cur.copy()
            if mutate(s):
                tx.update(s)
            return True

        await self.writer.update(build)

    def _begin(self, s: Service) -> bool:
        if s.update_status is not None:
            return False
        s.update_status = UpdateStatus(
            UpdateState.UPDATING, started_at=self.store.clock(), message="update in progress"
        )
        return True

    def _complete(self, s: Service) -> bool:
        st = s.update_status
        if st is None:
            return False
        if st.state is UpdateState.ROLLBACK_STARTED:
            st.state, st.message = UpdateState.ROLLBACK_COMPLETED, "rollback completed"
        else:
            st.state, st.message = UpdateState.COMPLETED, "update completed"
        st.completed_at = self.store.clock()
        return True

    @staticmethod
    def _pause(s: Service, message: str) -> bool:
        st = s.update_status
        if st is None:
            return False
        st.state = (
            UpdateState.ROLLBACK_PAUSED if st.state is UpdateState.ROLLBACK_STARTED else UpdateState.PAUSED
        )
        st.message = message
        return True

    @staticmethod
    def _rollback(s: Service, message: str) -> bool:
        st = s.update_status
        if st is None:
            return False
        if s.previous_spec is None:  # SwarmKit leaves the update stuck here; pausing says why
            st.state, st.message = UpdateState.PAUSED, f"{message}: no previous spec to roll back to"
            return True
        st.state, st.message = UpdateState.ROLLBACK_STARTED, message
        s.spec, s.spec_version = s.previous_spec, s.previous_spec_version
        s.previous_spec, s.previous_spec_version = None, 0
        return True


def _slot_order(key: SlotKey) -> tuple[int, int, str]:
    return (0, key, "") if isinstance(key, int) else (1, 0, key)


def _settled(task: Task | None) -> bool:
    """The new task ran (or failed), or it will not run any more (gone, or replaced by the orchestrator
    because its node went down or was drained)."""
    return task is None or task.status.state >= TaskState.RUNNING or task.desired_state > TaskState.RUNNING


def _shutdown(tx: Tx, tasks: list[Task]) -> Task | None:
    """Shut the tasks down; the last one actually shut down (the delayed start waits for it)."""
    stopped = None
    for t in tasks:
        if set_desired(tx, t.id, TaskState.SHUTDOWN):
            stopped = t
    return stopped
