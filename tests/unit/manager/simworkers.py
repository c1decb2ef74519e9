"""Test helper: a simulated scheduler + workers, and small store helpers for orchestration tests.

``SimWorkers`` plays the roles the orchestrators rely on but do not own: it takes NEW tasks to PENDING
(allocator), assigns PENDING tasks round-robin to READY, ACTIVE nodes that satisfy the constraints
(scheduler), and advances ASSIGNED tasks to READY/RUNNING as their desired state allows, shuts down
tasks whose desired state is past RUNNING, and fails or completes tasks on request (workers). A node
in ``silent_nodes`` stops reporting (its tasks keep their last state), like a node that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

from agents.manager.loop import ControlLoop, LocalCommitter
from agents.manager.orchestrator.globalmode import GlobalOrchestrator
from agents.manager.orchestrator.reaper import TaskReaper
from agents.manager.orchestrator.replicated import ReplicatedOrchestrator
from agents.manager.orchestrator.tasks import constraints_match
from agents.manager.updater import apply_spec_update
from agents.state.objects import (
    Cluster,
    ContainerStatus,
    Node,
    NodeAvailability,
    NodeDescription,
    NodeSpec,
    NodeState,
    NodeStatus,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
)
from agents.state.store import Store

MS = 1_000_000
"""One millisecond in nanoseconds."""

_ids = itertools.count(1)


class SimWorkers:
    def __init__(self, store: Store, interval: float = 0.002) -> None:
        self.store = store
        self.interval = interval
        self.fail_tasks: set[str] = set()
        """Task ids to fail (exit 1) once running."""
        self.fail_images: set[str] = set()
        """Tasks of these images fail right after reaching RUNNING."""
        self.reject_images: set[str] = set()
        """Tasks of these images fail before running (like a failed image pull)."""
        self.complete_tasks: set[str] = set()
        """Task ids to complete (exit 0) once running."""
        self.silent_nodes: set[str] = set()
        self._rr = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(self.interval)

    def step(self) -> None:
        """One pass: every task moves at most one step."""
        now = self.store.clock()
        with self.store.local_batch() as tx:
            for t in self.store.list(Task):
                new = self._advance(t)
                if new is None:
                    continue
                out = t.copy()
                out.status.state, out.status.timestamp = new[0], now
                out.status.message = new[1]
                if new[2] is not None:
                    out.node_id = new[2]
                if new[0] in (TaskState.FAILED, TaskState.COMPLETE):
                    code = 1 if new[0] is TaskState.FAILED else 0
                    out.status.container_status = ContainerStatus(exit_code=code)
                    out.status.err = f"task: non-zero exit ({code})" if code else ""
                tx.update(out)

    def _advance(self, t: Task) -> tuple[TaskState, str, str | None] | None:
        st = t.status.state
        if st > TaskState.RUNNING:
            return None
        if st >= TaskState.ASSIGNED and (
            t.node_id in self.silent_nodes or self._node_state(t) is not NodeState.READY
        ):
            return None
        if t.desired_state > TaskState.RUNNING:
            if st >= TaskState.ASSIGNED:
                return TaskState.SHUTDOWN, "shutdown", None
            return None
        if st is TaskState.NEW:
            return TaskState.PENDING, "pending task scheduling", None
        if st is TaskState.PENDING:
            node = self._pick(t)
            return None if node is None else (TaskState.ASSIGNED, "scheduler assigned task to node", node)
        image = t.spec.container.image
        if image in self.reject_images:
            return TaskState.REJECTED, "No such image", None
        if st is TaskState.RUNNING:
            if t.id in self.fail_tasks or image in self.fail_images:
                return TaskState.FAILED, "task: non-zero exit (1)", None
            if t.id in self.complete_tasks:
                return TaskState.COMPLETE, "finished", None
            return None
        target = TaskState.READY if t.desired_state < TaskState.RUNNING else TaskState.RUNNING
        if st < target:
            return target, str(target), None
        return None

    def _node_state(self, t: Task) -> NodeState | None:
        node = self.store.get(Node, t.node_id)
        return None if node is None else node.status.state

    def _pick(self, t: Task) -> str | None:
        service = self.store.get(Service, t.service_id)
        if t.node_id:
            node = self.store.get(Node, t.node_id)
            ok = (
                node is not None and node.status.state is NodeState.READY and node.id not in self.silent_nodes
            )
            return t.node_id if ok else None
        nodes = [
            n
            for n in self.store.list(Node)
            if n.status.state is NodeState.READY
            and n.spec.availability is NodeAvailability.ACTIVE
            and n.id not in self.silent_nodes
            and (service is None or constraints_match(service, n))
        ]
        if not nodes:
            return None
        self._rr += 1
        return nodes[self._rr % len(nodes)].id


# --------------------------------------------------------------------------------------- store helpers


def add_node(store: Store, name: str, labels: dict[str, str] | None = None) -> Node:
    node = Node(
        id=f"node{next(_ids):04d}{name}",
        spec=NodeSpec(name=name, labels=dict(labels or {})),
        description=NodeDescription(hostname=name),
        status=NodeStatus(state=NodeState.READY),
    )
    with store.local_batch() as tx:
        tx.create(node)
    out = store.get(Node, node.id)
    assert out is not None
    return out


def set_node(
    store: Store,
    node_id: str,
    state: NodeState | None = None,
    availability: NodeAvailability | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    cur = store.get(Node, node_id)
    assert cur is not None
    n = cur.copy()
    if state is not None:
        n.status.state = state
    if availability is not None:
        n.spec.availability = availability
    if labels is not None:
        n.spec.labels = dict(labels)
    with store.local_batch() as tx:
        tx.update(n)


def remove_node(store: Store, node_id: str) -> None:
    with store.local_batch() as tx:
        tx.delete(Node, node_id)


def set_retention(store: Store, limit: int) -> None:
    with store.local_batch() as tx:
        clusters = store.list(Cluster)
        if clusters:
            c = clusters[0].copy()
            c.spec.orchestration.task_history_retention_limit = limit
            tx.update(c)
        else:
            c = Cluster(id="cluster1")
            c.spec.orchestration.task_history_retention_limit = limit
            tx.create(c)


def create_service(
    store: Store,
    name: str,
    replicas: int = 1,
    mode: ServiceMode = ServiceMode.REPLICATED,
    image: str = "img:1",
    change: Callable[[ServiceSpec], None] | None = None,
) -> Service:
    """A service with test-sized timings (10 ms restart delay, 50 ms update monitor)."""
    spec = ServiceSpec(name=name, mode=mode, replicas=replicas)
    spec.task_template.container.image = image
    spec.task_template.restart_policy.delay = 10 * MS
    spec.update_config.monitor = 50 * MS
    spec.rollback_config.monitor = 50 * MS
    if change is not None:
        change(spec)
    svc = Service(id=f"svc{next(_ids):04d}{name}", spec=spec)
    with store.local_batch() as tx:
        tx.create(svc)
    out = store.get(Service, svc.id)
    assert out is not None
    return out


def update_service(store: Store, service_id: str, change: Callable[[ServiceSpec], None]) -> Service:
    """What ``docker service update`` does to the store (through the updater's API helper)."""
    cur = store.get(Service, service_id)
    assert cur is not None
    spec = cur.spec.copy()
    change(spec)
    with store.local_batch() as tx:
        tx.update(apply_spec_update(cur, spec))
    out = store.get(Service, service_id)
    assert out is not None
    return out


def scale(n: int) -> Callable[[ServiceSpec], None]:
    """A spec change for ``update_service``: ``docker service scale <svc>=n``."""

    def change(spec: ServiceSpec) -> None:
        spec.replicas = n

    return change


def delete_service(store: Store, service_id: str) -> None:
    with store.local_batch() as tx:
        tx.delete(Service, service_id)


def set_task_state(store: Store, task_id: str, state: TaskState) -> None:
    cur = store.get(Task, task_id)
    assert cur is not None
    t = cur.copy()
    t.status.state, t.status.timestamp = state, store.clock()
    with store.local_batch() as tx:
        tx.update(t)


# ------------------------------------------------------------------------------------------- queries


def tasks_of(store: Store, service_id: str) -> list[Task]:
    return store.tasks_by_service(service_id)


def live(store: Store, service_id: str) -> list[Task]:
    """Tasks meant to run."""
    return [t for t in store.tasks_by_service(service_id) if t.desired_state <= TaskState.RUNNING]


def running(store: Store, service_id: str) -> list[Task]:
    return [t for t in store.tasks_by_service(service_id) if t.status.state is TaskState.RUNNING]


def running_slots(store: Store, service_id: str) -> list[int]:
    return sorted(t.slot for t in live(store, service_id) if t.status.state is TaskState.RUNNING)


async def wait_until(pred: Callable[[], bool], timeout: float = 1.5, step: float = 0.002) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


# --------------------------------------------------------------------------------------------- loops


class Harness:
    """Orchestration loops + simulated workers on one store; ``restart_loops`` models a leader change."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.sim = SimWorkers(self.store)
        self.loops: list[ControlLoop] = []

    def start_loops(self) -> None:
        committer = LocalCommitter(self.store)
        self.loops = [
            ReplicatedOrchestrator(self.store, committer, task_timeout=1.0, retry_interval=0.05),
            GlobalOrchestrator(self.store, committer, task_timeout=1.0, retry_interval=0.05),
            TaskReaper(self.store, committer, batch_interval=0.005),
        ]
        for loop in self.loops:
            loop.start()

    async def stop_loops(self) -> None:
        for loop in reversed(self.loops):
            await loop.stop()
        self.loops = []

    async def restart_loops(self) -> None:
        await self.stop_loops()
        self.start_loops()

    async def __aenter__(self) -> Harness:
        self.start_loops()
        self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_loops()
        await self.sim.stop()
