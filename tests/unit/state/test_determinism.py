"""Managers applying the same log end in identical state, whichever snapshot they started from."""

from __future__ import annotations

import random

import pytest

from agents.state.changeset import Action, Changeset, Op
from agents.state.objects import Node, NodeState, Service, Task, TaskState
from agents.state.store import Store
from tests.unit.state.helpers import node, service, store, task


def _workload(seed: int, steps: int) -> list[bytes]:
    """A leader's log: random creates/updates/deletes, plus stale proposals that must be rejected."""
    rng = random.Random(seed)
    leader = store()
    log: list[bytes] = []
    stale: list[Task] = []

    def propose(data: bytes) -> None:
        log.append(data)
        leader.apply(len(log), data)

    for step in range(steps):
        with leader.batch() as tx:
            choice = rng.random()
            services = leader.list(Service)
            if choice < 0.15 or not services:
                svc = tx.create(service(f"svc{step}", replicas=rng.randint(1, 5), rng=rng))
                for slot in range(1, svc.spec.replicas + 1):
                    tx.create(task(svc, slot=slot, rng=rng))
                if rng.random() < 0.3:
                    tx.create(node(f"host{step}", rng=rng))
            elif choice < 0.8:
                for t in rng.sample(leader.list(Task), k=min(5, leader.count(Task))):
                    c = t.copy()
                    if rng.random() < 0.2:
                        stale.append(t.copy())
                    forward = [s for s in TaskState if s >= c.status.state]
                    c.status.state = rng.choice(forward)
                    c.status.timestamp = rng.random()
                    c.node_id = rng.choice(["", "n1", "n2", c.node_id])
                    tx.update(c)
            elif choice < 0.9:
                svc = rng.choice(services)
                for t in leader.tasks_by_service(svc.id):
                    tx.delete(Task, t.id)
                tx.delete(Service, svc.id)
            else:
                for n in leader.list(Node):
                    c = n.copy()
                    c.status.state = rng.choice(list(NodeState))
                    c.spec.labels[f"k{step}"] = str(rng.random())
                    tx.update(c)
        assert tx.changeset is not None
        tx.changeset.timestamp = 1_000.0 + step
        propose(tx.changeset.encode())
        if stale and rng.random() < 0.3:
            # A proposal built from an outdated read: every manager must reject it the same way.
            t = stale.pop()
            t.status.message = "late"
            propose(Changeset([Op(Action.UPDATE, "task", t.id, t, t.meta.version)], 2_000.0 + step).encode())
    return log


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_same_log_same_state(seed: int) -> None:
    log = _workload(seed, 120)
    a, b = Store(), Store()
    results_a = [a.apply(i + 1, e) for i, e in enumerate(log)]
    results_b = [b.apply(i + 1, e) for i, e in enumerate(log)]
    assert [r.ok for r in results_a] == [r.ok for r in results_b]
    assert any(not r.ok for r in results_a), "the workload should include rejected entries"
    assert sum(r.ok for r in results_a) > len(log) // 2
    assert a.snapshot() == b.snapshot()

    # A third manager installs a snapshot taken mid-way and replays the rest of the log.
    mid = len(log) // 2
    c = Store()
    for i, e in enumerate(log[:mid]):
        c.apply(i + 1, e)
    d = Store()
    d.restore(c.snapshot())
    assert d.index == mid and d.snapshot() == c.snapshot()
    results_d = [d.apply(i + 1, e) for i, e in enumerate(log) if i >= mid]
    assert [r.ok for r in results_d] == [r.ok for r in results_a[mid:]]
    assert d.snapshot() == a.snapshot()
    # Queries agree too (index contents, not just tables).
    for svc in a.list(Service):
        assert {t.id for t in a.tasks_by_service(svc.id)} == {t.id for t in d.tasks_by_service(svc.id)}
    for n in ("n1", "n2"):
        assert {t.id for t in a.tasks_by_node(n)} == {t.id for t in d.tasks_by_node(n)}


def test_snapshot_is_deterministic_and_compact() -> None:
    log = _workload(9, 60)
    a = Store()
    for i, e in enumerate(log):
        a.apply(i + 1, e)
    snap = a.snapshot()
    b = Store()
    b.restore(snap)
    assert b.snapshot() == snap
    assert all(b.get(Task, t.id) == t for t in a.list(Task))
