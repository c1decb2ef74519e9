"""The store on Raft: the state machine every manager applies, and the committer the leader's loops use.

Raft entries carry encoded changesets. Every manager applies them to its own `Store` in log order; the
proposer gets the `ApplyResult` back (accepted, or rejected as "update out of sequence" etc.). Empty
entries (a new leader's no-op) and membership entries are Raft's own and never reach the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agents.manager.errors import NoLeader, NotLeader
from agents.raft import types as raft_types
from agents.raft.node import NodeStopped, ProposalOutcomeUnknown, ProposalOverwritten, RaftNode
from agents.raft.types import Entry, ProposalDropped
from agents.state.changeset import Changeset
from agents.state.store import ApplyResult, Store

log = logging.getLogger(__name__)

LeaderAddr = Callable[[int], str | None]
"""Maps a Raft id to that manager's control address (from the Node objects in the store)."""


class StoreStateMachine:
    """Adapts a `Store` to the runner's `StateMachine` protocol."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def apply(self, entry: Entry) -> ApplyResult:
        return self.store.apply(entry.index, entry.data)

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        self.store.restore(data)


class RaftCommitter:
    """Proposes changesets through Raft; answers with the store's verdict once applied here.

    A proposal that cannot be committed within `timeout` (no quorum) fails with Docker's "does not have
    a leader" message, which is what students see when too few managers are online.
    """

    def __init__(self, raft: RaftNode, leader_addr: LeaderAddr, timeout: float) -> None:
        self.raft = raft
        self.leader_addr = leader_addr
        self.timeout = timeout

    async def commit(self, changeset: Changeset) -> ApplyResult:
        try:
            result = await self.raft.propose(changeset.encode(), timeout=self.timeout)
        except raft_types.NotLeader as e:
            if e.leader == raft_types.NONE:
                raise NoLeader() from None
            raise NotLeader(self.leader_addr(e.leader)) from None
        except (TimeoutError, ProposalDropped, ProposalOverwritten, ProposalOutcomeUnknown, NodeStopped):
            raise NoLeader() from None
        assert isinstance(result, ApplyResult)
        return result


