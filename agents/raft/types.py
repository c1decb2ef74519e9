"""Values exchanged between the Raft core, its storage, its transport and the node runner.

This module is the contract between the pieces of ``agents.raft``; it holds data only (no I/O, no logic
beyond trivial helpers), so the pure core, the WAL, the wire codec and the asyncio runner can evolve
separately.

Processing a :class:`Ready` (the runner's loop, the model of etcd-io/raft's ``Ready``):

1. persist ``snapshot`` (if any), then ``entries`` (which may overwrite the tail of the log from
   ``entries[0].index``), then ``hard_state`` (if any) -- all made durable with one fsync;
2. send ``messages`` (only after step 1: a vote or an append acknowledgement must never leave before the
   state it promises is on disk);
3. restore the state machine from ``snapshot`` (if any), then apply ``committed`` in order;
4. serve ``read_states`` once the applied index reaches their index;
5. call ``core.advance(ready)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NodeId = int
"""Raft member id; 0 means "none" (no vote, no known leader)."""

NONE: NodeId = 0


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1  # data is ConfChange.encode()


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any reply that depends on it."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    # Learners added by an ADD_VOTER request: the leader promotes them once they have caught up. Part of
    # the replicated membership (not leader-local) so a new leader finishes a promotion an old one began.
    promoting: tuple[NodeId, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


class ConfChangeType(IntEnum):
    ADD_LEARNER = 0  # a new member starts as a non-voter and catches up
    ADD_VOTER = 1  # promote (a learner, or a new member: it is added as a learner first)
    REMOVE = 2  # remove a voter or learner
    DEMOTE = 3  # voter -> learner


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: NodeId
    context: bytes = b""  # opaque to the core (the runner keeps the member's address here)


class MessageType(IntEnum):
    APPEND = 0
    APPEND_RESP = 1
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    SNAPSHOT = 8  # install-snapshot
    TIMEOUT_NOW = 9  # leadership transfer: start an election now
    READ_INDEX = 10  # follower -> leader: confirm a read index for `context`
    READ_INDEX_RESP = 11
    TRANSFER_LEADER = 12  # follower -> leader: please transfer leadership to `frm`/`index`-named node


@dataclass(slots=True)
class Message:
    type: MessageType
    to: NodeId
    frm: NodeId
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    LEARNER = 4  # a follower that does not vote


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the runner about when it changes."""

    leader: NodeId
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read of ``context`` may be served once the applied index reaches ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: SoftState | None = None


@dataclass(frozen=True, slots=True)
class PeerProgress:
    match: int
    next: int
    state: str  # "probe" | "replicate" | "snapshot"
    voter: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    """Introspection for teaching: `docker node inspect`, `labctl status`."""

    id: NodeId
    term: int
    role: Role
    leader: NodeId
    commit: int
    applied: int
    first_index: int
    last_index: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    progress: dict[NodeId, PeerProgress]  # leader only; empty elsewhere


class RaftError(Exception):
    """Base class for errors the core raises to its caller."""


class NotLeader(RaftError):
    """Raised on proposals to a non-leader; ``leader`` is the known leader id or 0."""

    def __init__(self, leader: NodeId) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The proposal cannot be accepted now (leadership transfer in progress, conf change pending)."""
