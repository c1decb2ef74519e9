"""The replicated cluster store: tables and indexes per kind, deterministic changeset apply, snapshots, watches.

Every manager applies the same Raft log in the same order through ``apply(index, data)``; apply uses only
the entry (its index and the proposer's timestamp), never the local clock or randomness, so all managers
hold identical state. A changeset is all-or-nothing: every check runs before anything is written.

Reads are shared, not copied. ``get``/``list``/``find``/``tasks_by_*`` return the stored objects themselves:
the scheduler lists 10,000 tasks per pass, and deep-copying each (~20 nested objects) would cost more than
the pass. The rule that makes this safe: **never mutate an object read from the store** (or from an
event); to change one, ``obj.copy()``, modify the copy and ``tx.update(copy)``. ``Tx.update`` refuses the
stored instance itself, apply never mutates a stored object (it replaces it), and snapshot restore builds
fresh objects, so a reference you hold is a stable, consistent version.

Threading: single-threaded (the manager's event loop); watch callbacks run synchronously inside apply.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from agents.state.changeset import Action, Changeset, decode_tables, encode_tables
from agents.state.errors import (
    AlreadyExists,
    CorruptChangeset,
    InvalidTransition,
    NameConflict,
    NotFound,
    SequenceConflict,
    StoreError,
)
from agents.state.gcpause import gc_paused
from agents.state.lookup import resolve
from agents.state.objects import KINDS, UNIQUE_NAME_KINDS, Meta, Node, StoreObject, Task, kind_of
from agents.state.tx import Tx
from agents.state.watch import Callback, Event, EventAction, WatchQueue

log = logging.getLogger("agents.state.store")

Obj = TypeVar("Obj", bound=StoreObject)

GC_PAUSE_BYTES = 32 * 1024
"""Entries bigger than this (some dozens of objects) apply with the cyclic GC paused (see ``gcpause``)."""

_TASK, _NODE = Task.KIND, Node.KIND


@dataclass(slots=True)
class ApplyResult:
    """Outcome of one log entry. ``error`` is set (and nothing changed) when the changeset was rejected."""

    ok: bool
    error: StoreError | None = None
    events: list[Event] = field(default_factory=list)


class _Indexes:
    """Secondary indexes; buckets map id -> object so removal is O(1) and a hit needs no table lookup."""

    __slots__ = ("hostname", "names", "task_node", "task_service", "task_service_node", "task_slot")

    def __init__(self) -> None:
        self.names: dict[str, dict[str, str]] = {k: {} for k in UNIQUE_NAME_KINDS}
        """kind -> lowercased name -> id (SwarmKit's name index is case-insensitive)."""
        self.hostname: dict[str, dict[str, StoreObject]] = {}
        self.task_service: dict[str, dict[str, StoreObject]] = {}
        self.task_node: dict[str, dict[str, StoreObject]] = {}
        self.task_slot: dict[tuple[str, int], dict[str, StoreObject]] = {}
        self.task_service_node: dict[tuple[str, str], dict[str, StoreObject]] = {}

    def add(self, kind: str, obj: StoreObject) -> None:
        if kind == _TASK:
            t = cast(Task, obj)
            _put(self.task_service, t.service_id, t)
            if t.node_id:
                _put(self.task_node, t.node_id, t)
                _put(self.task_service_node, (t.service_id, t.node_id), t)
            if t.slot:
                _put(self.task_slot, (t.service_id, t.slot), t)
        elif kind in UNIQUE_NAME_KINDS:
            self.names[kind][obj.name().lower()] = obj.id
        elif kind == _NODE:
            _put(self.hostname, cast(Node, obj).description.hostname.lower(), obj)

    def remove(self, kind: str, obj: StoreObject) -> None:
        if kind == _TASK:
            t = cast(Task, obj)
            _drop(self.task_service, t.service_id, t.id)
            if t.node_id:
                _drop(self.task_node, t.node_id, t.id)
                _drop(self.task_service_node, (t.service_id, t.node_id), t.id)
            if t.slot:
                _drop(self.task_slot, (t.service_id, t.slot), t.id)
        elif kind in UNIQUE_NAME_KINDS:
            names = self.names[kind]
            lname = obj.name().lower()
            if names.get(lname) == obj.id:
                del names[lname]
        elif kind == _NODE:
            _drop(self.hostname, cast(Node, obj).description.hostname.lower(), obj.id)

    def replace(self, kind: str, old: StoreObject, new: StoreObject) -> None:
        if kind == _TASK:
            o, n = cast(Task, old), cast(Task, new)
            if o.service_id == n.service_id and o.node_id == n.node_id and o.slot == n.slot:
                tid = n.id
                self.task_service[n.service_id][tid] = n
                if n.node_id:
                    self.task_node[n.node_id][tid] = n
                    self.task_service_node[(n.service_id, n.node_id)][tid] = n
                if n.slot:
                    self.task_slot[(n.service_id, n.slot)][tid] = n
                return
        self.remove(kind, old)
        self.add(kind, new)


def _put(index: dict[Any, dict[str, StoreObject]], key: Any, obj: StoreObject) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = {obj.id: obj}
    else:
        bucket[obj.id] = obj


def _drop(index: dict[Any, dict[str, StoreObject]], key: Any, oid: str) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(oid, None)
        if not bucket:
            del index[key]


class Store:
    """In-memory tables for every kind plus indexes. See the module docstring for the sharing rule."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        """Used only by the proposer side (``batch``) to stamp changesets; never by ``apply``."""
        self.index = 0
        """Raft index of the last applied entry (rejected entries count: they were applied, as no-ops)."""
        self._tables: dict[str, dict[str, StoreObject]] = {k: {} for k in KINDS}
        self._ix = _Indexes()
        self._subs: builtins.list[tuple[Callback, frozenset[str] | None, Callable[[], None] | None]] = []
        self._queues: builtins.list[WatchQueue] = []

    # ------------------------------------------------------------------------------------------- reads

    def get(self, kind: type[Obj], oid: str) -> Obj | None:
        """The stored object (shared: do not mutate) or None."""
        return cast(Obj | None, self._tables[kind_of(kind)].get(oid))

    def list(self, kind: type[Obj], predicate: Callable[[Obj], bool] | None = None) -> builtins.list[Obj]:
        """Stored objects of ``kind`` (shared), in creation order; optionally filtered."""
        objs = cast(Iterable[Obj], self._tables[kind_of(kind)].values())
        return list(objs) if predicate is None else [o for o in objs if predicate(o)]

    def count(self, kind: type[StoreObject]) -> int:
        return len(self._tables[kind_of(kind)])

    def find(self, kind: type[Obj], ref: str) -> Obj:
        """Resolve a full id, a name (hostname too for nodes) or a unique id prefix, like Docker."""
        k = kind_of(kind)
        table = cast(dict[str, Obj], self._tables[k])
        return resolve(k, ref, table.get, lambda r: cast(list[Obj], self.by_name(k, r)), table.items)

    def by_name(self, kind: type[StoreObject] | str, name: str) -> builtins.list[StoreObject]:
        """Objects whose name (case-insensitive) is ``name``; nodes match ``spec.name`` or hostname."""
        k = kind_of(kind)
        lname = name.lower()
        if k in UNIQUE_NAME_KINDS:
            oid = self._ix.names[k].get(lname)
            return [] if oid is None else [self._tables[k][oid]]
        if k == _NODE:
            found = dict(self._ix.hostname.get(lname, {}))
            for n in self._tables[k].values():
                if n.name().lower() == lname:
                    found[n.id] = n
            return list(found.values())
        return []

    def tasks_by_service(self, service_id: str) -> builtins.list[Task]:
        return cast(list[Task], list(self._ix.task_service.get(service_id, {}).values()))

    def tasks_by_node(self, node_id: str) -> builtins.list[Task]:
        return cast(list[Task], list(self._ix.task_node.get(node_id, {}).values()))

    def tasks_by_slot(self, service_id: str, slot: int) -> builtins.list[Task]:
        return cast(list[Task], list(self._ix.task_slot.get((service_id, slot), {}).values()))

    def tasks_by_service_node(self, service_id: str, node_id: str) -> builtins.list[Task]:
        """A global service's tasks on one node."""
        return cast(list[Task], list(self._ix.task_service_node.get((service_id, node_id), {}).values()))

    # ------------------------------------------------------------------------------------------ writes

    def batch(self) -> Tx:
        """Start building a changeset (``with store.batch() as tx: …``; then ``tx.changeset``)."""
        return Tx(self)

    def commit_local(self, changeset: Changeset) -> ApplyResult:
        """Apply at the next local index, through the same encode/decode path as the replicated log."""
        return self.apply(self.index + 1, changeset.encode())

    @contextlib.contextmanager
    def local_batch(self) -> Iterator[Tx]:
        """Build and commit locally in one step; raises the ``StoreError`` if the changeset is rejected."""
        with self.batch() as tx:
            yield tx
        assert tx.changeset is not None
        if tx.changeset.ops:
            res = self.commit_local(tx.changeset)
            if res.error is not None:
                raise res.error

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Apply one committed log entry. Never raises for bad input: the result carries the error and the
        state is unchanged (the index still advances, the entry was consumed)."""
        if index <= self.index:
            return ApplyResult(False, StoreError(f"entry {index} already applied (store at {self.index})"))
        with gc_paused(len(data) > GC_PAUSE_BYTES):
            try:
                cs = Changeset.decode(data)
                self._check(cs)
            except StoreError as e:
                self.index = index
                return ApplyResult(False, e)
            except Exception as e:  # defensive: a bug in checking must not take the manager down
                log.exception("unexpected error checking entry %d", index)
                self.index = index
                return ApplyResult(False, CorruptChangeset(f"{e.__class__.__name__}: {e}"))
            # Past this point nothing can fail on account of the input; an exception is a store bug.
            events = self._commit(index, cs)
        self.index = index
        self._notify(events)
        return ApplyResult(True, None, events)

    def _check(self, cs: Changeset) -> None:
        """Every rejection rule, against current state plus the changeset's own earlier ops."""
        tables, names = self._tables, self._ix.names
        touched: set[tuple[str, str]] = set()
        pending_names: dict[tuple[str, str], str | None] = {}

        def name_owner(kind: str, lname: str) -> str | None:
            key = (kind, lname)
            if key in pending_names:
                return pending_names[key]
            return names[kind].get(lname)

        for op in cs.ops:
            kind, oid = op.kind, op.id
            key = (kind, oid)
            if key in touched:
                raise CorruptChangeset(f"changeset writes {kind} {oid} twice")
            touched.add(key)
            cur = tables[kind].get(oid)
            action = op.action
            if action is Action.CREATE:
                if cur is not None:
                    raise AlreadyExists()
                if kind in UNIQUE_NAME_KINDS:
                    assert op.obj is not None
                    lname = op.obj.name().lower()
                    if name_owner(kind, lname) is not None:
                        raise NameConflict()
                    pending_names[(kind, lname)] = oid
                continue
            if cur is None:
                raise NotFound()
            if op.expected_version != cur.meta.version:
                raise SequenceConflict()
            if action is Action.UPDATE:
                new = op.obj
                assert new is not None
                if kind == _TASK:
                    before, after = cast(Task, cur).status.state, cast(Task, new).status.state
                    if after < before:
                        raise InvalidTransition(
                            f"task {oid}: status.state cannot move backwards from {before} to {after}"
                        )
                if kind in UNIQUE_NAME_KINDS:
                    old_l, new_l = cur.name().lower(), new.name().lower()
                    if old_l != new_l:
                        if name_owner(kind, new_l) not in (None, oid):
                            raise NameConflict()
                        pending_names[(kind, new_l)] = oid
                        pending_names[(kind, old_l)] = None
            elif kind in UNIQUE_NAME_KINDS:
                pending_names[(kind, cur.name().lower())] = None

    def _commit(self, index: int, cs: Changeset) -> builtins.list[Event]:
        tables, ix, ts = self._tables, self._ix, cs.timestamp
        events: builtins.list[Event] = []
        append = events.append
        created, updated, removed = EventAction.CREATED, EventAction.UPDATED, EventAction.REMOVED
        for op in cs.ops:
            kind, table = op.kind, tables[op.kind]
            obj = op.obj
            if op.action is Action.CREATE:
                assert obj is not None
                cast(Any, obj).meta = Meta(index, ts, ts)
                table[op.id] = obj
                ix.add(kind, obj)
                append(Event(created, kind, obj))
            elif op.action is Action.UPDATE:
                assert obj is not None
                old = table[op.id]
                cast(Any, obj).meta = Meta(index, old.meta.created_at, ts)
                table[op.id] = obj
                ix.replace(kind, old, obj)
                append(Event(updated, kind, obj, old))
            else:
                old = table.pop(op.id)
                ix.remove(kind, old)
                append(Event(removed, kind, old))
        return events

    # --------------------------------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Deterministic bytes of the whole state (tables in a fixed kind order, objects in creation order)."""
        return encode_tables(self.index, ((k, self._tables[k].values()) for k in KINDS))

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot; raises ``CorruptChangeset`` (state unchanged) if bad.

        Watch queues are closed as fallen behind and ``on_reset`` callbacks run: consumers must re-list.
        """
        with gc_paused(True):
            index, tables = decode_tables(data)
            new_tables: dict[str, dict[str, StoreObject]] = {k: {} for k in KINDS}
            ix = _Indexes()
            for kind, objs in tables:
                table = new_tables[kind]
                for o in objs:
                    table[o.id] = o
                    ix.add(kind, o)
        self._tables, self._ix, self.index = new_tables, ix, index
        for q in list(self._queues):
            q._close(fell_behind=True)
        for _, _, on_reset in list(self._subs):
            if on_reset is not None:
                self._safe(on_reset)

    # ------------------------------------------------------------------------------------------ watches

    def subscribe(
        self,
        callback: Callback,
        kinds: Iterable[type[StoreObject] | str] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> Callable[[], None]:
        """Call ``callback(events)`` synchronously after each applied changeset (only if some event matches
        ``kinds``). ``on_reset`` runs after a snapshot restore. Returns the unsubscribe function."""
        ks = frozenset(kind_of(k) for k in kinds) if kinds is not None else None
        entry = (callback, ks, on_reset)
        self._subs.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subs.remove(entry)

        return unsubscribe

    def watch_queue(
        self, kinds: Iterable[type[StoreObject] | str] | None = None, maxsize: int = 10_000
    ) -> WatchQueue:
        """A bounded queue of future events for async consumers (see ``agents.state.watch``)."""
        ks = [kind_of(k) for k in kinds] if kinds is not None else None
        q = WatchQueue(ks, maxsize, self._queues.remove)
        self._queues.append(q)
        return q

    def _notify(self, events: builtins.list[Event]) -> None:
        if not events:
            return
        for callback, kinds, _ in list(self._subs):
            evs = events if kinds is None else [e for e in events if e.kind in kinds]
            if evs:
                self._safe(callback, evs)
        for q in list(self._queues):
            q.push(events)

    @staticmethod
    def _safe(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("store watcher failed")
