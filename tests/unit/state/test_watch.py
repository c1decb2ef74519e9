from __future__ import annotations

import asyncio

import pytest

from agents.state.objects import Service, Task, TaskState
from agents.state.watch import Event, EventAction, WatchClosed
from tests.unit.state.helpers import service, store, task


def test_callbacks_see_events_in_order() -> None:
    s = store()
    seen: list[tuple[str, str, str]] = []
    batches: list[int] = []

    def cb(events: list[Event]) -> None:
        batches.append(len(events))
        seen.extend((e.action.value, e.kind, e.obj.id) for e in events)

    unsubscribe = s.subscribe(cb)
    svc = service()
    with s.local_batch() as tx:
        tx.create(svc)
        t = tx.create(task(svc))
    c = s.get(Task, t.id).copy()  # type: ignore[union-attr]
    c.status.state = TaskState.PENDING
    with s.local_batch() as tx:
        tx.update(c)
    with s.local_batch() as tx:
        tx.delete(Task, t.id)
    assert seen == [
        ("created", "service", svc.id),
        ("created", "task", t.id),
        ("updated", "task", t.id),
        ("removed", "task", t.id),
    ]
    assert batches == [2, 1, 1]
    unsubscribe()
    with s.local_batch() as tx:
        tx.create(service("other"))
    assert len(seen) == 4


def test_update_event_carries_old_and_new() -> None:
    s = store()
    svc = service()
    with s.local_batch() as tx:
        tx.create(svc)
    got: list[Event] = []
    s.subscribe(got.extend, kinds=[Service])
    c = s.get(Service, svc.id).copy()  # type: ignore[union-attr]
    c.spec.replicas = 5
    res = s.commit_local(_changeset(s, c))
    assert res.ok and res.events == got
    (ev,) = got
    assert ev.action is EventAction.UPDATED and ev.old is not None
    assert ev.old.spec.replicas == 1 and ev.obj.spec.replicas == 5  # type: ignore[attr-defined]


def _changeset(s, obj):  # type: ignore[no-untyped-def]
    with s.batch() as tx:
        tx.update(obj)
    return tx.changeset


def test_kind_filter_and_failing_callback() -> None:
    s = store()
    tasks_only: list[Event] = []
    s.subscribe(lambda evs: 1 / 0)  # a broken watcher must not break apply or others
    s.subscribe(tasks_only.extend, kinds=[Task])
    svc = service()
    with s.local_batch() as tx:
        tx.create(svc)
    with s.local_batch() as tx:
        tx.create(task(svc))
    assert [e.kind for e in tasks_only] == ["task"] and s.count(Task) == 1


def test_rejected_changeset_emits_nothing() -> None:
    s = store()
    got: list[Event] = []
    s.subscribe(got.extend)
    assert not s.apply(1, b"junk").ok
    assert got == []


def test_watch_queue_async() -> None:
    async def main() -> list[str]:
        s = store()
        q = s.watch_queue(kinds=[Task], maxsize=100)
        svc = service()
        out: list[str] = []

        async def consume() -> None:
            async for ev in q:
                out.append(f"{ev.action}:{ev.kind}")

        consumer = asyncio.create_task(consume())
        with s.local_batch() as tx:
            tx.create(svc)
            tx.create(task(svc, slot=1))
        await asyncio.sleep(0)
        with s.local_batch() as tx:
            tx.create(task(svc, slot=2))
        await asyncio.sleep(0)
        q.close()
        await asyncio.wait_for(consumer, 1)
        return out

    assert asyncio.run(main()) == ["created:task", "created:task"]


def test_watch_queue_overflow_closes_with_fell_behind() -> None:
    s = store()
    q = s.watch_queue(maxsize=5)
    fine = s.watch_queue(maxsize=1000)
    svc = service()
    with s.local_batch() as tx:
        tx.create(svc)
        for i in range(3):
            tx.create(task(svc, slot=i + 1))
    assert len(q) == 4 and q.get_nowait() is not None
    with s.local_batch() as tx:
        for i in range(3):
            tx.create(task(svc, slot=10 + i))
    assert q.closed and q.fell_behind and len(q) == 0, "buffer dropped: memory stays bounded"
    with pytest.raises(WatchClosed) as exc:
        q.get_nowait()
    assert exc.value.fell_behind
    assert len(fine) == 7 and not fine.closed
    with s.local_batch() as tx:
        tx.create(task(svc, slot=20))
    assert len(q) == 0, "a closed queue no longer buffers"

    async def consume() -> None:
        async for _ in q:
            pass

    with pytest.raises(WatchClosed):
        asyncio.run(consume())


def test_restore_resets_watchers() -> None:
    s = store()
    svc = service()
    with s.local_batch() as tx:
        tx.create(svc)
    snap = s.snapshot()
    q = s.watch_queue()
    resets: list[int] = []
    s.subscribe(lambda evs: None, on_reset=lambda: resets.append(1))
    s.restore(snap)
    assert q.fell_behind and resets == [1]
    with pytest.raises(WatchClosed):
        q.drain()
