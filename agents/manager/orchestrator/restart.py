"""Restart supervisor: replace a task that stopped while meant to run, per its restart policy.

As SwarmKit's ``restart.Supervisor``: the old task's desired state goes to SHUTDOWN and, if the policy
allows, a replacement is created in the same slot (same node for global services) with desired state
READY, so the scheduler can place it and the worker prepare it; after the restart ``delay`` (and, when
the old task is still running, once it has stopped, up to ``task_timeout``) the desired state becomes
RUNNING. ``docker service ps`` therefore shows the replacement as ``Ready`` during the delay.

Restart counts (for ``max_attempts``/``window``) live in memory and are rebuilt from the store's task
history when a new leader starts (``taskinit``); delayed starts are re-armed from task timestamps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agents.manager.orchestrator.tasks import cluster_of, is_global, new_task, runnable, seconds, set_desired
from agents.manager.orchestrator.writer import Writer, wait_for
from agents.state.objects import (
    Cluster,
    Node,
    NodeAvailability,
    NodeState,
    RestartCondition,
    Service,
    Task,
    TaskState,
    UpdateState,
)
from agents.state.store import Store
from agents.state.tx import Tx

log = logging.getLogger(__name__)

HistoryKey = tuple[str, int, str]
"""(service id, slot, node id for global services)."""


@dataclass(slots=True)
class _RestartInfo:
    spec_version: int = 0
    total: int = 0
    restarted_at: deque[float] = field(default_factory=deque)
    """Creation times of replacements, oldest first (kept only when a window is set)."""


@dataclass(slots=True)
class PlannedRestart:
    """A restart written into a changeset; ``after_commit`` arms its delayed start."""

    old: Task
    new: Task
    delay: float
    wait_stop: bool


def history_key(service: Service, task: Task) -> HistoryKey:
    return (task.service_id, task.slot, task.node_id if is_global(service) else "")


class RestartSupervisor:
    def __init__(self, store: Store, writer: Writer, task_timeout: float = 60.0) -> None:
        self.store = store
        self.writer = writer
        self.task_timeout = task_timeout
        """How long a delayed start waits for the old task to stop before starting anyway."""
        self._history: dict[str, dict[HistoryKey, _RestartInfo]] = {}
        self._delays: dict[str, asyncio.Task[None]] = {}
        self._waiters: set[str] = set()
        self._spawned: set[asyncio.Task[None]] = set()
        self.restart_hook: Callable[[Tx, Task, Service], PlannedRestart | None] | None = None
        """The owning orchestrator's restart (it knows mode rules, e.g. a global task's node must fit)."""

    # ------------------------------------------------------------------------------------- restarts

    def restart(
        self, tx: Tx, cluster: Cluster | None, service: Service, task: Task, now: float
    ) -> PlannedRestart | None:
        """Shut ``task`` down and, if the policy says so, create its replacement (inside ``tx``)."""
        if task.id in self._delays:
            # The task is itself a replacement still waiting to start: restart it once that is over.
            self._restart_after_delay(task.id)
            return None
        if task.desired_state > TaskState.COMPLETE:
            return None
        set_desired(tx, task.id, TaskState.SHUTDOWN)
        if not self.should_restart(task, service):
            return None
        if is_global(service):
            new = new_task(cluster, service, 0, task.node_id, now)
        else:
            new = new_task(cluster, service, task.slot, "", now)
        new.desired_state = TaskState.READY
        node = tx.get(Node, task.node_id) if task.node_id else None
        # The restart delay damps crash loops. A task moved off a drained node, or off a node that went
        # down, did not crash: replace it at once (SwarmKit waits the delay for a down node too, which is
        # much of why Docker takes ~20 s to recover a lost worker's tasks).
        moved = node is not None and (
            node.spec.availability is NodeAvailability.DRAIN or node.status.state is NodeState.DOWN
        )
        delay = 0.0 if moved else seconds(task.spec.restart_policy.delay)
        wait_stop = not (
            (node is not None and node.status.state is NodeState.DOWN)
            or task.status.state > TaskState.RUNNING
        )
        tx.create(new)
        return PlannedRestart(task, new, delay, wait_stop)

    def after_commit(self, service: Service, planned: PlannedRestart) -> None:
        stored = self.store.get(Task, planned.new.id)
        if stored is None:
            return
        self.record_restart(service, stored)
        self.delay_start(planned.old, stored.id, planned.delay, planned.wait_stop)

    def _restart_after_delay(self, task_id: str) -> None:
        if task_id in self._waiters:
            return
        self._waiters.add(task_id)
        pending = self._delays[task_id]

        async def later() -> None:
            try:
                await asyncio.wait([pending])
                planned: list[tuple[Service, PlannedRestart]] = []

                def build(tx: Tx) -> bool:
                    t = tx.get(Task, task_id)
                    svc = tx.get(Service, t.service_id) if t is not None else None
                    if t is None or svc is None or t.desired_state > TaskState.RUNNING:
                        return True
                    if self.restart_hook is not None:
                        p = self.restart_hook(tx, t, svc)
                    else:
                        p = self.restart(tx, cluster_of(tx), svc, t, self.store.clock())
                    if p is not None:
                        planned.append((svc, p))
                    return True

                if await self.writer.update(build):
                    for svc, p in planned:
                        self.after_commit(svc, p)
            finally:
                self._waiters.discard(task_id)

        self._spawn(later(), f"restart-wait-{task_id}")

    def should_restart(self, task: Task, service: Service) -> bool:
        policy = task.spec.restart_policy
        if policy.condition is RestartCondition.NONE:
            return False
        if policy.condition is RestartCondition.ON_FAILURE and task.status.state is TaskState.COMPLETE:
            return False
        if policy.max_attempts == 0:
            return True
        info = self._history.get(task.service_id, {}).get(history_key(service, task))
        if info is None or info.spec_version != task.spec_version:
            return True
        if policy.window == 0:
            return info.total < policy.max_attempts
        at = task.status.timestamp
        lookback = at - seconds(policy.window)
        while info.restarted_at and info.restarted_at[0] <= lookback:
            info.restarted_at.popleft()
        count = sum(1 for ts in info.restarted_at if ts < at)
        return count < policy.max_attempts

    def record_restart(self, service: Service, replacement: Task) -> None:
        """Count ``replacement`` as a restart of its slot (only tracked when max_attempts is set)."""
        policy = replacement.spec.restart_policy
        if policy.max_attempts == 0:
            return
        per_service = self._history.setdefault(replacement.service_id, {})
        info = per_service.setdefault(history_key(service, replacement), _RestartInfo())
        if replacement.spec_version != info.spec_version:
            info.spec_version, info.total, info.restarted_at = replacement.spec_version, 0, deque()
        info.total += 1
        if policy.window:
            info.restarted_at.append(replacement.meta.created_at or self.store.clock())

    def clear_service_history(self, service_id: str) -> None:
        self._history.pop(service_id, None)

    def updatable_tasks_in_slot(self, slot: list[Task], service: Service) -> list[Task]:
        """The tasks that fill a slot. An empty answer means the slot is dead (to be refilled or deleted);
        a slot whose last task will not be restarted (policy exhausted) stays filled by that task."""
        if not slot:
            return []
        live = runnable(slot)
        if live:
            return live
        if service.update_status is not None and service.update_status.state is UpdateState.ROLLBACK_STARTED:
            return []
        newest = max(slot, key=lambda t: (t.status.timestamp, t.meta.created_at))
        return [] if self.should_restart(newest, service) else [newest]

    # -------------------------------------------------------------------------------- delayed start

    def delay_start(
        self, old: Task | None, new_task_id: str, delay: float, wait_stop: bool
    ) -> asyncio.Task[None]:
        """Set ``new_task_id``'s desired state to RUNNING after ``delay`` seconds and, if ``wait_stop``,
        once ``old`` has stopped (or its node is down/gone, or ``task_timeout`` passed). Replaces any
        delayed start already pending for that task. Await the result with ``asyncio.wait`` (awaiting it
        directly would cancel it along with the waiter)."""
        prev = self._delays.pop(new_task_id, None)
        if prev is not None:
            prev.cancel()
        wait_for_old = wait_stop and old is not None and old.status.state <= TaskState.RUNNING

        async def run() -> None:
            try:
                if delay > 0:
                    await asyncio.sleep(delay)
                if wait_for_old and old is not None:
                    await wait_for(self.store, lambda: self._stopped(old), (Task, Node), self.task_timeout)
                await self.writer.update(lambda tx: self.start_now(tx, new_task_id) or True)
            finally:
                if self._delays.get(new_task_id) is me:
                    del self._delays[new_task_id]

        me = self._spawn(run(), f"delay-start-{new_task_id}")
        self._delays[new_task_id] = me
        return me

    def _stopped(self, old: Task) -> bool:
        t = self.store.get(Task, old.id)
        if t is None or t.status.state > TaskState.RUNNING:
            return True
        if t.status.state < TaskState.ASSIGNED and t.desired_state > TaskState.RUNNING:
            return True  # never reached a node and never will: nothing to wait for
        node = self.store.get(Node, old.node_id) if old.node_id else None
        return bool(old.node_id) and (node is None or node.status.state is NodeState.DOWN)

    @staticmethod
    def start_now(tx: Tx, task_id: str) -> bool:
        """Move a delayed task to desired RUNNING (no-op if it is gone or already there or past)."""
        return set_desired(tx, task_id, TaskState.RUNNING)

    def cancel(self, task_id: str) -> None:
        t = self._delays.pop(task_id, None)
        if t is not None:
            t.cancel()

    def cancel_all(self) -> None:
        """Stop every pending delayed start and restart wait (the loop is stopping; the next leader re-arms
        delayed starts from the store)."""
        for t in list(self._spawned):
            t.cancel()
        self._spawned.clear()
        self._delays.clear()
        self._waiters.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        task.add_done_callback(_log_failure)
        return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("orchestration task %s failed", task.get_name(), exc_info=task.exception())
