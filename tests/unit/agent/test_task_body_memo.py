"""The /tasks JSON memo: one entry per live task, refreshed on a new version, deleted tasks pruned."""

from __future__ import annotations

import pytest

from agents.api import tasks as tasks_api
from agents.state.objects import Task, TaskState
from tests.unit.state.helpers import service, store, task


@pytest.fixture(autouse=True)
def _fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_api, "_BODIES", {})
    monkeypatch.setattr(tasks_api, "_prune_at", 256)


def test_new_version_replaces_the_entry_and_is_served() -> None:
    s = store()
    svc = service("web", replicas=1)
    with s.local_batch() as tx:
        tx.create(svc)
        t = tx.create(task(svc, slot=1))
    got = s.get(Task, t.id)
    assert got is not None
    first = tasks_api.task_body(s, got)
    assert tasks_api.task_body(s, got) is first  # memoised
    c = got.copy()
    c.status.state = TaskState.RUNNING
    with s.local_batch() as tx:
        tx.update(c)
    newer = s.get(Task, t.id)
    assert newer is not None
    body = tasks_api.task_body(s, newer)
    assert body is not first and body["Status"]["State"] == "running"
    assert len(tasks_api._BODIES) == 1


def test_deleted_tasks_are_pruned_when_the_memo_doubles() -> None:
    s = store()
    svc = service("web", replicas=1)
    with s.local_batch() as tx:
        tx.create(svc)
    for slot in range(600):  # each task listed once, then deleted (the reaper's churn)
        with s.local_batch() as tx:
            t = tx.create(task(svc, slot=slot + 1))
        got = s.get(Task, t.id)
        assert got is not None
        tasks_api.task_body(s, got)
        with s.local_batch() as tx:
            tx.delete(Task, t.id)
    assert len(tasks_api._BODIES) < 256
