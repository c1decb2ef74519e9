"""The scheduler: assigns pending tasks to nodes, in batches (leader-only control loop).

Follows SwarmKit's ``manager/scheduler``. A task is picked up once the allocator moved it to PENDING and
it should run (desired state RUNNING/COMPLETE) and has no node; it leaves ASSIGNED with
"scheduler assigned task to node". Tasks a global orchestrator created with a node already (PENDING +
node id) are only checked against that node ("scheduler confirmed task can run on preassigned node").
A task nothing can run stays PENDING with Docker's ``no suitable node (…)`` in ``status.err`` and is
retried whenever nodes or tasks change.

Why batches: every changeset is a Raft round trip. Events are collected for ``batch_window`` (restarted
while they keep coming, at most ``max_latency``), then all pending tasks are decided in one pass and
committed in changesets of at most ``max_changeset`` tasks. Node infos are maintained from watch events
(no re-scan per pass) and rebuilt from the store only on start, when the watch falls behind, or after a
changeset is rejected (another writer got in between: the store is the truth, start over from it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agents.manager.batchloop import BatchingLoop
from agents.manager.loop import Committer, commit_tx
from agents.manager.scheduler.filters import Pipeline, no_suitable_node
from agents.manager.scheduler.nodeinfo import ACTIVE_MAX, NodeInfo
from agents.manager.scheduler.placement import GroupPlacer, Ranker, spread_descriptors
from agents.manager.shallow import cloner
from agents.state.errors import NotFound, SequenceConflict
from agents.state.gcpause import gc_paused
from agents.state.objects import Node, Service, Task, TaskState, TaskStatus
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import Event, EventAction

log = logging.getLogger(__name__)

ASSIGNED_MESSAGE = "scheduler assigned task to node"
PREASSIGNED_MESSAGE = "scheduler confirmed task can run on preassigned node"
MAX_CHANGESET_TASKS = 5_000
GC_PAUSE_TASKS = 256

_PENDING, _ASSIGNED, _RUNNING = TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING
_FAILED = (TaskState.FAILED, TaskState.REJECTED)
_TASK, _NODE = Task.KIND, Node.KIND


_with_status: Callable[[Task, str, TaskStatus], Task] = cloner(Task, "node_id", "status")
"""A new Task differing from the stored one in ``node_id`` and ``status`` only (shallow, see ``shallow``)."""


@dataclass(slots=True)
class Decision:
    old: Task
    """The version the decision was made from (its ``meta.version`` must still be current)."""
    new: Task


class Scheduler(BatchingLoop):
    name = "scheduler"
    kinds = (Task, Node)

    def __init__(
        self,
        store: Store,
        committer: Committer,
        *,
        batch_window: float = 0.05,
        max_latency: float = 1.0,
        max_changeset: int = MAX_CHANGESET_TASKS,
        queue_size: int = 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            store, committer, batch_window=batch_window, max_latency=max_latency, queue_size=queue_size
        )
        self.max_changeset = max_changeset
        self.monotonic = monotonic
        self.nodes: dict[str, NodeInfo] = {}
        self._where: dict[str, str] = {}
        """Task id -> node id, for every task counted in a node info."""
        self.unassigned: dict[str, Task] = {}
        self.preassigned: dict[str, Task] = {}

    async def tick(self) -> None:
        """One scheduling pass: decide, then commit in chunks (each built just before its commit, so
        decisions about tasks that changed meanwhile are dropped)."""
        decisions = self.plan()
        step = self.max_changeset
        for i in range(0, len(decisions), step):
            tx = self.build_chunk(decisions[i : i + step])
            if tx is None:
                continue
            result = await commit_tx(self.committer, tx)
            if result is not None and not result.ok:
                log.info("scheduler changeset rejected (%s); rebuilding from the store", result.error)
                self.resync()
                return

    # ---------------------------------------------------------------------------------- state

    def rebuild(self) -> None:
        """Full state from the store (start, new leader, fell behind)."""
        self.nodes = {n.id: NodeInfo(n) for n in self.store.list(Node)}
        self._where = {}
        self.unassigned = {}
        self.preassigned = {}
        for t in self.store.list(Task):
            self._on_task(t)

    def handle(self, ev: Event) -> bool:
        """Apply one watch event; True if it may let a pending task be placed (a pass is due)."""
        if ev.kind == _TASK:
            if ev.action is EventAction.REMOVED:
                tid = ev.obj.id
                self.unassigned.pop(tid, None)
                self.preassigned.pop(tid, None)
                return self._off_node(tid)
            assert isinstance(ev.obj, Task)
            return self._on_task(ev.obj)
        if ev.kind == _NODE:
            assert isinstance(ev.obj, Node)
            if ev.action is EventAction.REMOVED:
                ni = self.nodes.pop(ev.obj.id, None)
                if ni is not None:
                    for tid in ni.tasks:
                        self._where.pop(tid, None)
                return False
            self._on_node_changed(ev.obj)
            return bool(self.unassigned or self.preassigned)  # may now fit somewhere
        return False

    def _on_node_changed(self, n: Node) -> None:
        ni = self.nodes.get(n.id)
        if ni is not None:
            ni.set_node(n)
            return
        self.nodes[n.id] = NodeInfo(n)
        for t in self.store.tasks_by_node(n.id):  # tasks that named the node before we knew it
            if _ASSIGNED <= t.status.state <= _RUNNING:
                self._on_node(t)

    def _on_task(self, t: Task) -> bool:
        tid, state = t.id, t.status.state
        if state < _PENDING:
            return False
        if state > _RUNNING:
            self.unassigned.pop(tid, None)
            self.preassigned.pop(tid, None)
            if state in _FAILED and t.slot and tid in self._where:
                self.nodes[self._where[tid]].task_failed(t, self.monotonic())
            return self._off_node(tid)
        if state == _PENDING:
            if t.desired_state > ACTIVE_MAX:
                self.unassigned.pop(tid, None)
                self.preassigned.pop(tid, None)
                return self._off_node(tid)
            self._off_node(tid)
            mine, other = (
                (self.preassigned, self.unassigned) if t.node_id else (self.unassigned, self.preassigned)
            )
            other.pop(tid, None)
            prev = mine.get(tid)
            mine[tid] = t
            # Our own "no suitable node" write comes back with the same error: no new pass for that.
            return prev is None or prev.status.err != t.status.err or prev.node_id != t.node_id
        self.unassigned.pop(tid, None)
        self.preassigned.pop(tid, None)
        if t.node_id:
            return self._on_node(t)
        return self._off_node(tid)

    def _on_node(self, t: Task) -> bool:
        tid, nid = t.id, t.node_id
        cur = self._where.get(tid)
        moved = False
        if cur is not None and cur != nid:
            moved = self._off_node(tid)
        ni = self.nodes.get(nid)
        if ni is None:
            return moved
        self._where[tid] = nid
        return ni.add_task(t) or moved

    def _off_node(self, tid: str) -> bool:
        nid = self._where.pop(tid, None)
        if nid is None:
            return False
        ni = self.nodes.get(nid)
        return ni is not None and ni.remove_task(tid)

    # ------------------------------------------------------------------------------- decisions

    def plan(self) -> list[Decision]:
        """Decide for every pending task (updating node infos as if the decisions were committed)."""
        # Thousands of new small objects and no cycles: the cyclic GC would only walk the store.
        with gc_paused(len(self.unassigned) > GC_PAUSE_TASKS):
            return self._plan()

    def _plan(self) -> list[Decision]:
        now = self.store.clock()
        decisions: list[Decision] = []
        if self.preassigned:
            self._plan_preassigned(now, decisions)
        if not self.unassigned:
            return decisions
        groups: dict[tuple[str, int, str], list[Task]] = {}
        for t in self.unassigned.values():
            key = (t.service_id, t.spec_version, "") if t.service_id else ("", 0, t.id)
            g = groups.get(key)
            if g is None:
                groups[key] = [t]
            else:
                g.append(t)
        for key in sorted(groups):
            tasks = groups[key]
            tasks.sort(key=_task_order)
            self._plan_group(tasks, now, decisions)
        return decisions

    def _plan_group(self, tasks: list[Task], now: float, decisions: list[Decision]) -> None:
        first = tasks[0]
        pipeline = Pipeline(first)
        ranker = Ranker(first.service_id, first.spec_version, self.monotonic())
        placer = GroupPlacer(
            self.nodes.values(), pipeline, ranker, spread_descriptors(first.spec.placement.preferences)
        )
        status = TaskStatus(timestamp=now, state=_ASSIGNED, message=ASSIGNED_MESSAGE)
        unassigned, where, append = self.unassigned, self._where, decisions.append

        def assign(t: Task, ni: NodeInfo) -> None:
            new = _with_status(t, ni.node.id, status)
            ni.add_task(new)
            where[t.id] = ni.node.id
            del unassigned[t.id]
            append(Decision(t, new))

        left = placer.place(tasks, assign)
        if not left:
            return
        if first.service_id and self.store.get(Service, first.service_id) is None:
            return  # service gone: the orchestrator removes its tasks
        err = no_suitable_node(pipeline.explain(list(self.nodes.values())))
        for t in left:
            if t.status.err == err:
                continue
            new = _with_status(t, "", _with_err(t.status, err, now))
            unassigned[t.id] = new
            append(Decision(t, new))

    def _plan_preassigned(self, now: float, decisions: list[Decision]) -> None:
        status = TaskStatus(timestamp=now, state=_ASSIGNED, message=PREASSIGNED_MESSAGE)
        for t in sorted(self.preassigned.values(), key=_task_order):
            ni = self.nodes.get(t.node_id)
            if ni is None:
                continue
            pipeline = Pipeline(t)
            if pipeline.check(ni):
                new = _with_status(t, t.node_id, status)
                ni.add_task(new)
                self._where[t.id] = t.node_id
                del self.preassigned[t.id]
                decisions.append(Decision(t, new))
                continue
            err = pipeline.explain([ni])
            if t.status.err != err:
                new = _with_status(t, t.node_id, _with_err(t.status, err, now))
                self.preassigned[t.id] = new
                decisions.append(Decision(t, new))

    def build_chunk(self, chunk: list[Decision]) -> Tx | None:
        """A finished transaction for ``chunk``; decisions whose task changed meanwhile are undone."""
        with gc_paused(len(chunk) > GC_PAUSE_TASKS), self.store.batch() as tx:
            update = tx.update
            for d in chunk:
                try:
                    update(d.new)  # checks d.new's version (the one decided on) against the store
                except (SequenceConflict, NotFound):
                    self._undo(d, self.store.get(Task, d.old.id))
        return tx if len(tx) else None

    def build(self, decisions: list[Decision]) -> list[Tx]:
        """All chunks at once (the bench times this; ``tick`` builds each chunk just before committing)."""
        step = self.max_changeset
        out = [self.build_chunk(decisions[i : i + step]) for i in range(0, len(decisions), step)]
        return [tx for tx in out if tx is not None]

    def _undo(self, d: Decision, cur: Task | None) -> None:
        tid = d.old.id
        if d.new.node_id and self._where.get(tid) == d.new.node_id:
            self._off_node(tid)
        self.unassigned.pop(tid, None)
        self.preassigned.pop(tid, None)
        if cur is not None:
            self._on_task(cur)
        self.dirty = True


def _task_order(t: Task) -> tuple[int, str]:
    return (t.slot, t.id)


def _with_err(status: TaskStatus, err: str, now: float) -> TaskStatus:
    return TaskStatus(
        timestamp=now,
        state=status.state,
        message=status.message,
        err=err,
        container_status=status.container_status,
        port_status=status.port_status,
    )
