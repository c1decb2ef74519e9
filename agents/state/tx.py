"""Building a changeset on the proposer: ``with store.batch() as tx: tx.create(…); tx.update(…)``.

Reads through ``tx`` see its own pending writes. Writes are checked early against the local store (a
stale version, a taken name or a backwards task state fail at once, where the caller can still react),
and ``Store.apply`` checks them again when the entry commits, because another proposal may land first.
Several writes to one object collapse into one op (create+update -> create, create+delete -> nothing), so
the changeset touches each object at most once, which apply requires.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, cast

from agents.state.changeset import Action, Changeset, Op
from agents.state.errors import AlreadyExists, InvalidTransition, NameConflict, NotFound, SequenceConflict
from agents.state.lookup import resolve
from agents.state.objects import UNIQUE_NAME_KINDS, StoreObject, Task, kind_of, new_id

if TYPE_CHECKING:
    from agents.state.store import Store

Obj = TypeVar("Obj", bound=StoreObject)


class Tx:
    """A changeset under construction. After the ``with`` block exits cleanly, ``changeset`` is set (to be
    proposed, or ``store.commit_local``-ed); if the block raises, nothing is recorded."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._writes: dict[tuple[str, str], Op] = {}
        self._pending_tasks: dict[tuple[object, ...], dict[str, Task]] = {}
        self.changeset: Changeset | None = None
        self._sealed = False

    def __enter__(self) -> Tx:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sealed = True
        if exc_type is None:
            self.changeset = Changeset(list(self._writes.values()), self._store.clock())

    def __len__(self) -> int:
        return len(self._writes)

    # ------------------------------------------------------------------------------------------- reads

    def get(self, kind: type[Obj], oid: str) -> Obj | None:
        op = self._writes.get((kind_of(kind), oid))
        if op is not None:
            return cast(Obj | None, op.obj)
        return self._store.get(kind, oid)

    def list(self, kind: type[Obj], predicate: Callable[[Obj], bool] | None = None) -> builtins.list[Obj]:
        k = kind_of(kind)
        writes = self._writes
        out = [o for o in self._store.list(kind) if (k, o.id) not in writes]
        out.extend(cast(Obj, op.obj) for (wk, _), op in writes.items() if wk == k and op.obj is not None)
        return out if predicate is None else [o for o in out if predicate(o)]

    def find(self, kind: type[Obj], ref: str) -> Obj:
        k = kind_of(kind)
        objs = {o.id: o for o in self.list(kind)}

        def by_name(r: str) -> builtins.list[Obj]:
            lr = r.lower()
            return [o for o in objs.values() if o.name().lower() == lr or _hostname(o) == lr]

        return resolve(k, ref, objs.get, by_name, objs.items)

    def tasks_by_service(self, service_id: str) -> builtins.list[Task]:
        return self._merge(self._store.tasks_by_service(service_id), ("s", service_id))

    def tasks_by_node(self, node_id: str) -> builtins.list[Task]:
        return self._merge(self._store.tasks_by_node(node_id), ("n", node_id))

    def tasks_by_slot(self, service_id: str, slot: int) -> builtins.list[Task]:
        return self._merge(self._store.tasks_by_slot(service_id, slot), ("slot", service_id, slot))

    def _merge(self, base: Iterable[Task], key: tuple[object, ...]) -> builtins.list[Task]:
        """Stored matches without pending writes, plus pending versions that match (O(matches))."""
        writes = self._writes
        out = [t for t in base if (_TASK, t.id) not in writes] if writes else builtins.list(base)
        # Re-check: a caller may have mutated a pending object in place after it was indexed.
        for t in self._pending_tasks.get(key, {}).values():
            op = writes.get((_TASK, t.id))
            if op is not None and op.obj is t and key in _task_keys(t):
                out.append(t)
        return out

    def _track(self, old: StoreObject | None, new: StoreObject | None) -> None:
        """Keep the pending-task indexes in step with ``_writes``."""
        if isinstance(old, Task):
            for key in _task_keys(old):
                bucket = self._pending_tasks.get(key)
                if bucket is not None:
                    bucket.pop(old.id, None)
        if isinstance(new, Task):
            for key in _task_keys(new):
                self._pending_tasks.setdefault(key, {})[new.id] = new

    # ------------------------------------------------------------------------------------------ writes

    def create(self, obj: Obj) -> Obj:
        """Record a create; assigns a new id if ``obj.id`` is empty. The tx keeps ``obj`` (no copy)."""
        self._check_open()
        k = obj.KIND
        if not obj.id:
            obj.id = new_id()
        key = (k, obj.id)
        if key in self._writes or self._store.get(type(obj), obj.id) is not None:
            raise AlreadyExists()
        self._check_name(k, obj, None)
        self._writes[key] = Op(Action.CREATE, k, obj.id, obj)
        self._track(None, obj)
        return obj

    def update(self, obj: Obj) -> Obj:
        """Record an update of a *copy* of a stored object; ``obj.meta.version`` is the version it was read
        at and must still be current."""
        self._check_open()
        k = obj.KIND
        key = (k, obj.id)
        stored = self._store.get(type(obj), obj.id)
        if obj is stored:
            raise ValueError(
                "tx.update needs a copy: objects read from the store are shared and must not be mutated"
            )
        prev = self._writes.get(key)
        if prev is not None and prev.action is Action.DELETE:
            raise NotFound()
        current = prev.obj if prev is not None else stored
        if current is None:
            raise NotFound()
        if prev is None or prev.action is Action.UPDATE:
            expected = prev.expected_version if prev is not None else current.meta.version
            if obj.meta.version != expected:
                raise SequenceConflict()
        if isinstance(obj, Task):
            before = cast(Task, current).status.state
            if obj.status.state < before:
                raise InvalidTransition(
                    f"task {obj.id}: status.state cannot move backwards from {before} to {obj.status.state}"
                )
        self._check_name(k, obj, current)
        if prev is not None:
            self._track(prev.obj, obj)
            prev.obj = obj
        else:
            self._writes[key] = Op(Action.UPDATE, k, obj.id, obj, obj.meta.version)
            self._track(None, obj)
        return obj

    def delete(self, kind: type[StoreObject], oid: str) -> None:
        """Record a delete at the version currently visible (raises ``NotFound`` if there is none)."""
        self._check_open()
        k = kind_of(kind)
        key = (k, oid)
        prev = self._writes.get(key)
        if prev is not None:
            if prev.action is Action.DELETE:
                raise NotFound()
            self._track(prev.obj, None)
            if prev.action is Action.CREATE:
                del self._writes[key]
                return
            self._writes[key] = Op(Action.DELETE, k, oid, None, prev.expected_version)
            return
        stored = self._store.get(kind, oid)
        if stored is None:
            raise NotFound()
        self._writes[key] = Op(Action.DELETE, k, oid, None, stored.meta.version)

    def _check_name(self, kind: str, obj: StoreObject, current: StoreObject | None) -> None:
        if kind not in UNIQUE_NAME_KINDS:
            return
        lname = obj.name().lower()
        if current is not None and current.name().lower() == lname:
            return
        for other in self.list(type(obj)):
            if other.id != obj.id and other.name().lower() == lname:
                raise NameConflict()

    def _check_open(self) -> None:
        if self._sealed:
            raise RuntimeError("transaction already closed")


_TASK = Task.KIND


def _task_keys(t: Task) -> tuple[tuple[object, ...], ...]:
    return (("s", t.service_id), ("n", t.node_id), ("slot", t.service_id, t.slot))


def _hostname(obj: StoreObject) -> str | None:
    desc = getattr(obj, "description", None)
    return desc.hostname.lower() if desc is not None else None
