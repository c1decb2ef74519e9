from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.state.changeset import Action, Changeset, Op
from agents.state.errors import (
    AlreadyExists,
    Ambiguous,
    CorruptChangeset,
    InvalidTransition,
    NameConflict,
    NotFound,
    SequenceConflict,
    StoreError,
)
from agents.state.objects import (
    KINDS,
    Network,
    NetworkSpec,
    Node,
    Secret,
    SecretSpec,
    Service,
    Task,
    TaskState,
)
from agents.state.store import Store
from tests.unit.state.helpers import node, service, store, task


def _populated() -> tuple[Store, Service, list[Task]]:
    s = store()
    svc = service("web", replicas=3)
    with s.local_batch() as tx:
        tx.create(svc)
        tasks = [tx.create(task(svc, slot=i)) for i in (1, 2, 3)]
    return s, svc, tasks


def test_create_sets_meta_from_changeset() -> None:
    s, svc, tasks = _populated()
    got = s.get(Service, svc.id)
    assert got is not None and got.spec.name == "web"
    assert got.meta.version == 1 == s.index
    assert got.meta.created_at == got.meta.updated_at > 0
    assert {t.id for t in s.tasks_by_service(svc.id)} == {t.id for t in tasks}
    assert s.count(Task) == 3 and len(s.list(Task, lambda t: t.slot > 1)) == 2


def test_update_and_delete() -> None:
    s, svc, tasks = _populated()
    t = s.get(Task, tasks[0].id)
    assert t is not None
    created = t.meta.created_at
    c = t.copy()
    c.status.state = TaskState.RUNNING
    c.node_id = "n1"
    with s.local_batch() as tx:
        tx.update(c)
    now = s.get(Task, c.id)
    assert now is not None and now.status.state is TaskState.RUNNING and now.meta.version == 2
    assert now.meta.created_at == created and now.meta.updated_at > created
    assert t.status.state is TaskState.NEW, "the old version a reader held is unchanged"
    assert [x.id for x in s.tasks_by_node("n1")] == [c.id]
    assert [x.id for x in s.tasks_by_slot(svc.id, 1)] == [c.id]
    assert [x.id for x in s.tasks_by_service_node(svc.id, "n1")] == [c.id]
    with s.local_batch() as tx:
        tx.delete(Task, c.id)
    assert s.get(Task, c.id) is None and s.tasks_by_node("n1") == [] and s.tasks_by_slot(svc.id, 1) == []


def test_version_conflict_rejects_whole_changeset() -> None:
    s, svc, tasks = _populated()
    stale = [s.get(Task, t.id).copy() for t in tasks]  # type: ignore[union-attr]
    first = stale[0].copy()
    first.status.state = TaskState.PENDING
    with s.local_batch() as tx:
        tx.update(first)  # someone else wins: tasks[0] is now at version 2
    before = s.snapshot()
    # A changeset built from the stale reads: valid for tasks 1 and 2, stale for 0; plus a create.
    ops = [Op(Action.UPDATE, "task", t.id, t, t.meta.version) for t in stale]
    ops.append(Op(Action.CREATE, "task", "newtask", task(svc, slot=9)))
    ops[-1].obj.id = "newtask"  # type: ignore[union-attr]
    for t in stale:
        t.status.state = TaskState.ASSIGNED
    res = s.apply(s.index + 1, Changeset(ops, 5.0).encode())
    assert not res.ok and isinstance(res.error, SequenceConflict)
    assert str(res.error) == "update out of sequence"
    assert res.events == []
    assert _same_objects(s, before)
    assert s.get(Task, "newtask") is None


def _same_objects(s: Store, snap: bytes) -> bool:
    """Same objects (ignoring the store index, which advances even for rejected entries)."""
    other = Store()
    other.restore(snap)
    return all(s.list(cls) == other.list(cls) for cls in KINDS.values())


def test_tx_detects_stale_version_early() -> None:
    s, _, tasks = _populated()
    a = s.get(Task, tasks[0].id).copy()  # type: ignore[union-attr]
    b = s.get(Task, tasks[0].id).copy()  # type: ignore[union-attr]
    with s.local_batch() as tx:
        tx.update(a)
    with pytest.raises(SequenceConflict), s.batch() as tx:
        tx.update(b)


def test_update_requires_a_copy() -> None:
    s, _, tasks = _populated()
    shared = s.get(Task, tasks[0].id)
    with pytest.raises(ValueError, match="copy"), s.batch() as tx:
        tx.update(shared)  # type: ignore[arg-type]


def test_name_conflicts_case_insensitive() -> None:
    s, _svc, _ = _populated()
    with pytest.raises(NameConflict), s.batch() as tx:
        tx.create(service("WEB"))
    # apply rejects it too (two proposals racing)
    dup = service("Web")
    res = s.commit_local(Changeset([Op(Action.CREATE, "service", dup.id, dup)], 1.0))
    assert isinstance(res.error, NameConflict)
    assert str(res.error) == "rpc error: code = AlreadyExists desc = name conflicts with an existing object"
    for cls, spec in ((Secret, SecretSpec), (Network, NetworkSpec)):
        with s.local_batch() as tx:
            tx.create(cls(spec=spec(name="shared")))  # type: ignore[operator]
        with pytest.raises(NameConflict), s.local_batch() as tx:
            tx.create(cls(spec=spec(name="Shared")))  # type: ignore[operator]


def test_rename_frees_old_name_and_checks_new() -> None:
    s, svc, _ = _populated()
    other = service("api")
    with s.local_batch() as tx:
        tx.create(other)
    c = s.get(Service, svc.id).copy()  # type: ignore[union-attr]
    c.spec.name = "api"
    with pytest.raises(NameConflict), s.batch() as tx:
        tx.update(c)
    c.spec.name = "frontend"
    with s.local_batch() as tx:
        tx.update(c)
    assert s.find(Service, "frontend").id == svc.id
    with s.local_batch() as tx:
        tx.create(service("web"))  # the old name is free again


def test_create_existing_id_and_delete_unknown() -> None:
    s, svc, tasks = _populated()
    with pytest.raises(AlreadyExists), s.batch() as tx:
        tx.create(task(svc, slot=1).__class__(id=tasks[0].id, service_id=svc.id))
    with pytest.raises(NotFound), s.batch() as tx:
        tx.delete(Task, "nope")
    res = s.commit_local(Changeset([Op(Action.DELETE, "task", "nope", None, 1)], 1.0))
    assert isinstance(res.error, NotFound) and str(res.error) == "object does not exist"
    dup = tasks[0].copy()
    res = s.commit_local(Changeset([Op(Action.CREATE, "task", dup.id, dup)], 1.0))
    assert isinstance(res.error, AlreadyExists) and str(res.error) == "object already exists"
    res = s.commit_local(Changeset([Op(Action.DELETE, "task", tasks[1].id, None, 99)], 1.0))
    assert isinstance(res.error, SequenceConflict)
    assert s.count(Task) == 3


def test_task_state_cannot_go_backwards() -> None:
    s, _, tasks = _populated()
    c = s.get(Task, tasks[0].id).copy()  # type: ignore[union-attr]
    c.status.state = TaskState.RUNNING
    with s.local_batch() as tx:
        tx.update(c)
    back = s.get(Task, c.id).copy()  # type: ignore[union-attr]
    back.status.state = TaskState.STARTING
    with pytest.raises(InvalidTransition), s.batch() as tx:
        tx.update(back)
    res = s.commit_local(Changeset([Op(Action.UPDATE, "task", back.id, back, back.meta.version)], 1.0))
    assert isinstance(res.error, InvalidTransition) and "backwards from running to starting" in str(res.error)
    assert s.get(Task, c.id).status.state is TaskState.RUNNING  # type: ignore[union-attr]
    same = s.get(Task, c.id).copy()  # type: ignore[union-attr]
    same.status.message = "still running"
    with s.local_batch() as tx:
        tx.update(same)  # staying in a state is fine


def test_tx_reads_its_own_writes_and_collapses() -> None:
    s, svc, tasks = _populated()
    with s.batch() as tx:
        new = tx.create(task(svc, slot=4))
        assert tx.get(Task, new.id) is new
        assert {t.slot for t in tx.tasks_by_service(svc.id)} == {1, 2, 3, 4}
        tx.delete(Task, tasks[0].id)
        assert tx.get(Task, tasks[0].id) is None
        assert len(tx.tasks_by_service(svc.id)) == 3 and tx.tasks_by_slot(svc.id, 1) == []
        again = new.copy()
        again.node_id = "n9"
        tx.update(again)
        assert [t.id for t in tx.tasks_by_node("n9")] == [new.id]
        gone = tx.create(task(svc, slot=5))
        tx.delete(Task, gone.id)
        assert tx.find(Service, "web").id == svc.id
    cs = tx.changeset
    assert cs is not None and [(op.action, op.id) for op in cs.ops] == [
        (Action.CREATE, new.id),
        (Action.DELETE, tasks[0].id),
    ]
    assert s.commit_local(cs).ok
    assert s.get(Task, new.id).node_id == "n9"  # type: ignore[union-attr]


def test_aborted_tx_records_nothing() -> None:
    s, svc, _ = _populated()
    with pytest.raises(RuntimeError), s.batch() as tx:
        tx.create(task(svc, slot=7))
        raise RuntimeError("boom")
    assert tx.changeset is None
    with pytest.raises(RuntimeError, match="closed"):
        tx.create(task(svc, slot=8))


def test_find_by_id_prefix_and_name() -> None:
    s = store()
    a, b = service("alpha"), service("beta")
    a.id, b.id = "abc" + "0" * 22, "abd" + "0" * 22
    with s.local_batch() as tx:
        tx.create(a)
        tx.create(b)
        tx.create(node("worker-1"))
        tx.create(node("dup"))
        tx.create(node("dup"))
    assert s.find(Service, a.id) is s.get(Service, a.id)
    assert s.find(Service, "abc").id == a.id
    assert s.find(Service, "Beta").id == b.id
    with pytest.raises(Ambiguous, match=r"service ab is ambiguous \(2 matches found\)"):
        s.find(Service, "ab")
    with pytest.raises(NotFound, match="service zzz not found"):
        s.find(Service, "zzz")
    with pytest.raises(NotFound):
        s.find(Service, "")
    assert s.find(Node, "worker-1").description.hostname == "worker-1"
    with pytest.raises(Ambiguous):
        s.find(Node, "dup")
    assert len(s.by_name(Node, "DUP")) == 2


def test_name_used_as_prefix_of_other_id_prefers_name() -> None:
    s = store()
    a, b = service("abc"), service("other")
    b.id = "abc" + "1" * 22
    with s.local_batch() as tx:
        tx.create(a)
        tx.create(b)
    assert s.find(Service, "abc").id == a.id


def test_stale_index_is_refused() -> None:
    s, _, _ = _populated()
    res = s.apply(1, Changeset([], 1.0).encode())
    assert not res.ok and "already applied" in str(res.error) and s.index == 1


def test_double_write_in_changeset_is_refused() -> None:
    s, _, tasks = _populated()
    t = s.get(Task, tasks[0].id).copy()  # type: ignore[union-attr]
    ops = [
        Op(Action.UPDATE, "task", t.id, t, t.meta.version),
        Op(Action.DELETE, "task", t.id, None, t.meta.version),
    ]
    res = s.commit_local(Changeset(ops, 1.0))
    assert isinstance(res.error, CorruptChangeset) and s.get(Task, t.id) is not None


GARBAGE = [
    b"",
    b"\x00\x01garbage",
    msgpack.packb([1, 1.0, [], [[9, "task", "x", 0, None]]]),
    msgpack.packb([1, 1.0, [], [[1, "volume", "x", 0, ["x"]]]]),
    msgpack.packb([1, 1.0, [], [[1, "task", "x", 0, ["x", None, "s", 1, "", 99]]]]),
    msgpack.packb([1, 1.0, [], [[1, "task", "x", 0, {"id": "x"}]]]),
    msgpack.packb([1, 1.0, [], [[1, "service", "y", 0, ["x"]]]]),
    msgpack.packb([1, 1.0, [], [[1, "service", "x", 0, ["x", "notmeta"]]]]),
    msgpack.packb([1, "t", [], []]),
    msgpack.packb([2, 1.0, [], []]),
    msgpack.packb({"a": 1}),
    msgpack.packb([1, 1.0, [[1]], [[1, "service", "", 0, [""]]]]),
    msgpack.packb([1, 1.0, [], [[2, "service", "x", "1", ["x"]]]]),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_is_an_error_not_an_exception(data: bytes) -> None:
    s, _, _ = _populated()
    before = s.snapshot()
    res = s.apply(s.index + 1, data)
    assert not res.ok and isinstance(res.error, StoreError) and res.events == []
    assert _same_objects(s, before)
    assert s.index == 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda x: msgpack.packb(x), st.recursive(
    st.none() | st.integers(-5, 5) | st.text(max_size=5) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=6), max_leaves=20)))  # fmt: skip
def test_fuzzed_entries_never_raise(data: bytes) -> None:
    s = Store()
    res = s.apply(1, data)
    assert res.ok == (res.error is None)
    assert s.count(Task) == 0 or res.ok


def test_corrupt_snapshot_leaves_state() -> None:
    s, _, _ = _populated()
    with pytest.raises(CorruptChangeset):
        s.restore(b"junk")
    assert s.count(Task) == 3 and s.index == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["create", "update", "delete"]), st.integers(0, 9), st.integers(0, 3)),
        max_size=40,
    )
)
def test_tx_task_queries_match_brute_force(steps: list[tuple[str, int, int]]) -> None:
    s, svc, _ = _populated()
    other = service("api")
    with s.local_batch() as tx0:
        tx0.create(other)
    services = [svc, other]
    with s.batch() as tx:
        for what, pick, n in steps:
            tasks = tx.list(Task)
            if what == "create" or not tasks:
                tx.create(task(services[pick % 2], slot=n + 1, node_id=f"n{n}" if n else ""))
                continue
            t = tasks[pick % len(tasks)]
            if what == "delete":
                tx.delete(Task, t.id)
            else:
                c = t.copy()
                c.node_id, c.slot = f"n{pick % 3}", (pick % 4) + 1
                tx.update(c)
        everything = tx.list(Task)
        for sv in services:
            assert {t.id for t in tx.tasks_by_service(sv.id)} == {
                t.id for t in everything if t.service_id == sv.id
            }
            for slot in range(1, 6):
                want = {t.id for t in everything if t.service_id == sv.id and t.slot == slot}
                assert {t.id for t in tx.tasks_by_slot(sv.id, slot)} == want
        for n in ("n0", "n1", "n2", "n3"):
            assert {t.id for t in tx.tasks_by_node(n)} == {t.id for t in everything if t.node_id == n}
    assert tx.changeset is not None
    res = s.commit_local(tx.changeset)
    assert res.ok, res.error
    assert sorted(t.id for t in s.list(Task)) == sorted(t.id for t in everything)


def test_tx_pending_object_mutated_in_place() -> None:
    s, svc, _ = _populated()
    with s.batch() as tx:
        t = tx.create(task(svc, slot=8, node_id="a"))
        t.node_id = "b"  # the tx owns it until it is sealed; in-place edits are allowed
        tx.update(t)
        assert tx.tasks_by_node("a") == [] and [x.id for x in tx.tasks_by_node("b")] == [t.id]
