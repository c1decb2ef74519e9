"""Cluster membership: the ConfChange wire encoding and the configuration derived from the log.

Design choice (Raft thesis ch. 4, single-server changes): a configuration takes effect as soon as its
entry is *appended* to a server's log, not when it commits. That is safe because the leader allows only
one uncommitted configuration entry at a time and only after it has committed an entry of its own term
(the fix for the single-server-change bug Ongaro reported in 2015). The price is that a configuration
must be rolled back when its entry is truncated, so the membership keeps the configuration after every
configuration entry still in the log (``history``) on top of the one in the snapshot (``base``).

Semantics of an applied change (all idempotent, so replaying the log on restart is harmless):

* ADD_LEARNER -- a non-member becomes a learner; with the *promote* flag the learner is also marked to
  be promoted by the leader once it has caught up (this is what ``propose_conf_change(ADD_VOTER)``
  of a new member writes);
* ADD_VOTER   -- the node becomes a voter (learner or not);
* REMOVE      -- the node leaves (voter or learner);
* DEMOTE      -- a voter becomes a learner.
"""

from __future__ import annotations

import struct

from agents.raft.types import ConfChange, ConfChangeType, ConfState

_HDR = struct.Struct(">BBBQ")  # version, flags, type, node id; then the opaque context
_VERSION = 1
_FLAG_PROMOTE = 0x01


def encode_conf_change(cc: ConfChange, *, promote: bool = False) -> bytes:
    """Deterministic bytes for ``Entry.data`` of a CONF_CHANGE entry."""
    return _HDR.pack(_VERSION, _FLAG_PROMOTE if promote else 0, int(cc.type), cc.node_id) + cc.context


def decode_conf_change_flags(data: bytes) -> tuple[ConfChange, bool]:
    """``(change, promote)``; raises ValueError on anything that is not our encoding."""
    if len(data) < _HDR.size:
        raise ValueError("conf change too short")
    version, flags, typ, node = _HDR.unpack_from(data)
    if version != _VERSION or flags & ~_FLAG_PROMOTE or node == 0:
        raise ValueError("not a conf change encoding")
    return ConfChange(ConfChangeType(typ), node, bytes(data[_HDR.size :])), bool(flags & _FLAG_PROMOTE)


def decode_conf_change(data: bytes) -> ConfChange:
    """Inverse of :func:`encode_conf_change` (the promote flag is internal to the core)."""
    return decode_conf_change_flags(data)[0]


def apply_change(conf: ConfState, cc: ConfChange, promote: bool) -> ConfState:
    voters = set(conf.voters)
    learners = set(conf.learners)
    promoting = set(conf.promoting)
    n = cc.node_id
    t = cc.type
    if t == ConfChangeType.ADD_LEARNER:
        if n not in voters:
            learners.add(n)
            if promote:
                promoting.add(n)
    elif t == ConfChangeType.ADD_VOTER:
        learners.discard(n)
        promoting.discard(n)
        voters.add(n)
    elif t == ConfChangeType.REMOVE:
        voters.discard(n)
        learners.discard(n)
        promoting.discard(n)
    elif t == ConfChangeType.DEMOTE and n in voters:
        voters.discard(n)
        learners.add(n)
        promoting.discard(n)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)), tuple(sorted(promoting)))


class Membership:
    """The configuration in force: the snapshot's, then every configuration entry of the log."""

    __slots__ = ("base", "history", "learners", "promoting", "state", "voter_list", "voters")

    def __init__(self, base: ConfState) -> None:
        self.base = base
        self.history: list[tuple[int, ConfState]] = []
        self._set(base)

    def _set(self, conf: ConfState) -> None:
        self.state = conf
        self.voters = frozenset(conf.voters)
        self.learners = frozenset(conf.learners)
        self.promoting = frozenset(conf.promoting)
        self.voter_list = tuple(sorted(conf.voters))

    def apply(self, index: int, data: bytes) -> bool:
        """Apply the configuration entry at ``index``; False (no-op) when ``data`` is not decodable."""
        try:
            cc, promote = decode_conf_change_flags(data)
        except ValueError:
            return False
        conf = apply_change(self.state, cc, promote)
        self.history.append((index, conf))
        self._set(conf)
        return True

    def rollback(self, from_index: int) -> bool:
        """Forget configuration entries at or after ``from_index`` (their log tail was truncated)."""
        h = self.history
        if not h or h[-1][0] < from_index:
            return False
        while h and h[-1][0] >= from_index:
            h.pop()
        self._set(h[-1][1] if h else self.base)
        return True

    def conf_at(self, index: int) -> ConfState:
        conf = self.base
        for idx, c in self.history:
            if idx > index:
                break
            conf = c
        return conf

    def compact(self, index: int) -> None:
        """The log up to ``index`` became a snapshot: fold older history into the base."""
        self.base = self.conf_at(index)
        self.history = [(i, c) for i, c in self.history if i > index]

    def reset(self, base: ConfState) -> None:
        self.base = base
        self.history = []
        self._set(base)
