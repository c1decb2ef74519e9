"""Changesets: the unit a leader proposes to Raft and every manager applies, and their wire format.

Wire format (msgpack, plain types only)::

    [FORMAT, timestamp, specs, ops]
    op = [action, kind, id, expected_version, payload]   # payload: object to_list() (create/update) or None

``specs`` interns task specs: a task's ``"spec"`` is an index into it. Orchestrators create tasks in bulk,
each carrying an identical copy of the service's template, so interning shrinks a 10,000-task changeset
several times and lets the decoder build one ``TaskSpec`` that all those tasks share (safe because stored
objects are never mutated; see ``store``). Snapshots use the same scheme.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from agents.state import serde
from agents.state.errors import CorruptChangeset
from agents.state.gcpause import gc_paused
from agents.state.objects import KINDS, StoreObject, Task, TaskSpec

FORMAT = 1


class Action(enum.IntEnum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3


@dataclass(slots=True)
class Op:
    """One write. ``expected_version`` is the ``meta.version`` the writer read (0 for creates)."""

    action: Action
    kind: str
    id: str
    obj: StoreObject | None = None
    expected_version: int = 0


@dataclass(slots=True)
class Changeset:
    """An all-or-nothing group of writes; ``timestamp`` is the proposer's clock, used by every manager."""

    ops: list[Op] = field(default_factory=list)
    timestamp: float = 0.0

    def __len__(self) -> int:
        return len(self.ops)

    def encode(self) -> bytes:
        interner = SpecInterner()
        ops: list[list[Any]] = []
        with gc_paused(len(self.ops) > 256):
            for op in self.ops:
                payload: list[Any] | None = None
                if op.obj is not None:
                    payload = encode_object(op.obj, interner)
                ops.append([int(op.action), op.kind, op.id, op.expected_version, payload])
            out: bytes = msgpack.packb(
                [FORMAT, float(self.timestamp), interner.table, ops], use_bin_type=True
            )
        return out

    @classmethod
    def decode(cls, data: bytes) -> Changeset:
        """Parse and type-check an entry; anything malformed raises ``CorruptChangeset``."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
            fmt, timestamp, specs_raw, ops_raw = raw
            if fmt != FORMAT:
                raise CorruptChangeset(f"unsupported changeset format {fmt!r}")
            if type(timestamp) not in (float, int) or type(ops_raw) is not list:
                raise CorruptChangeset("malformed changeset header")
            specs = decode_specs(specs_raw)
            ops = [_decode_op(o, specs) for o in ops_raw]
        except CorruptChangeset:
            raise
        except Exception as e:  # msgpack errors, unpacking, ValueError from from_dict...
            raise CorruptChangeset(f"corrupt changeset: {e.__class__.__name__}: {e}") from None
        return cls(ops, float(timestamp))


class SpecInterner:
    """Collects distinct task specs. The same ``TaskSpec`` instance (tasks decoded from one entry share
    one) is found by identity; otherwise identical specs are found by their msgpack bytes."""

    __slots__ = ("_by_bytes", "_by_identity", "_keep", "table")

    def __init__(self) -> None:
        self.table: list[list[Any]] = []
        self._by_bytes: dict[bytes, int] = {}
        self._by_identity: dict[int, int] = {}
        self._keep: list[TaskSpec] = []  # keeps ids stable while encoding

    def __call__(self, spec: TaskSpec) -> int:
        i = self._by_identity.get(id(spec))
        if i is not None:
            return i
        as_list = spec.to_list()
        key: bytes = msgpack.packb(as_list, use_bin_type=True)
        i = self._by_bytes.get(key)
        if i is None:
            i = self._by_bytes[key] = len(self.table)
            self.table.append(as_list)
        self._by_identity[id(spec)] = i
        self._keep.append(spec)
        return i


_TASK_SPEC_POS = [f.name for f in dataclasses.fields(Task)].index("spec")
_encode_task = serde.list_encoder_with_hook(Task, "spec")


def encode_object(obj: StoreObject, interner: SpecInterner) -> list[Any]:
    if type(obj) is Task:
        return _encode_task(obj, interner)
    return obj.to_list()


def decode_specs(raw: Any) -> list[TaskSpec]:
    if type(raw) is not list:
        raise CorruptChangeset("malformed spec table")
    return [TaskSpec.from_list(s) for s in raw]


def decode_object(cls: type[StoreObject], d: Any, specs: list[TaskSpec]) -> StoreObject:
    if type(d) is not list:
        raise CorruptChangeset(f"malformed {cls.KIND} payload")
    if cls is Task:
        ref = d[_TASK_SPEC_POS] if len(d) > _TASK_SPEC_POS else None
        if type(ref) is not int or not 0 <= ref < len(specs):
            raise CorruptChangeset("task spec reference out of range")
        d[_TASK_SPEC_POS] = specs[ref]
    obj = cls.from_list(d)
    if type(obj.id) is not str or obj.id == "":
        raise CorruptChangeset(f"{cls.KIND} without an id")
    return obj


_ACTIONS: dict[Any, Action] = {int(a): a for a in Action}


def _decode_op(o: Any, specs: list[TaskSpec]) -> Op:
    if type(o) is not list or len(o) != 5:
        raise CorruptChangeset("malformed op")
    action_raw, kind, oid, expected, payload = o
    action = _ACTIONS[action_raw]
    cls = KINDS[kind]
    if type(oid) is not str or oid == "" or type(expected) is not int:
        raise CorruptChangeset("malformed op")
    obj = None
    if action is not Action.DELETE:
        obj = decode_object(cls, payload, specs)
        if obj.id != oid:
            raise CorruptChangeset(f"op id {oid} does not match object id {obj.id}")
    return Op(action, kind, oid, obj, expected)


def encode_tables(index: int, tables: Iterable[tuple[str, Iterable[StoreObject]]]) -> bytes:
    """Snapshot bytes: ``[FORMAT, index, specs, [[kind, [object lists…]], …]]`` in the given order."""
    interner = SpecInterner()
    with gc_paused(True):
        out_tables = [[kind, [encode_object(o, interner) for o in objs]] for kind, objs in tables]
        out: bytes = msgpack.packb([FORMAT, index, interner.table, out_tables], use_bin_type=True)
    return out


def decode_tables(data: bytes) -> tuple[int, Iterator[tuple[str, list[StoreObject]]]]:
    """Inverse of ``encode_tables``; raises ``CorruptChangeset`` on malformed input."""
    try:
        fmt, index, specs_raw, tables = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if fmt != FORMAT or type(index) is not int or type(tables) is not list:
            raise CorruptChangeset("malformed snapshot header")
        specs = decode_specs(specs_raw)
        decoded = []
        for kind, objs in tables:
            cls = KINDS[kind]
            if type(objs) is not list:
                raise CorruptChangeset("malformed snapshot table")
            decoded.append((kind, [decode_object(cls, d, specs) for d in objs]))
    except CorruptChangeset:
        raise
    except Exception as e:
        raise CorruptChangeset(f"corrupt snapshot: {e.__class__.__name__}: {e}") from None
    return index, iter(decoded)
