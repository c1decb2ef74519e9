"""The pure Raft state machine: ticks, messages and requests in; a :class:`Ready` out.

No I/O, no clock, no global randomness: the runner (``node.py``) and the simulation (``tests/sim``)
drive it and are responsible for persisting and sending what each ``Ready`` holds (see ``types.py``).

Choices worth knowing (each is documented where it is implemented):

* pre-vote and check-quorum with a leader lease, as in the Raft thesis section 9.6 / etcd: a node that
  heard from a leader within an election timeout ignores (pre-)vote requests, so a partitioned or removed
  node cannot disrupt a healthy cluster;
* membership changes are single-server changes that take effect when *appended* (see
  ``membership.py``); a leader accepts a new one only after the previous one committed and after it
  committed an entry of its own term;
* ``propose_conf_change`` that removes or demotes the leader itself does not queue: it starts a
  leadership transfer to the most up-to-date voter and raises :class:`ProposalDropped`; the caller
  retries on the new leader;
* a fresh cluster is bootstrapped by writing one ADD_VOTER (ADD_LEARNER) entry per initial member at
  term 1, committed, in the first ``Ready`` (every member writes the same entries), so a new member that
  receives the log from index 1 learns the initial membership too;
* the leader counts its own log as matched as soon as it appends: its ``APPEND`` messages go out in the
  same ``Ready`` as the entries, after the runner has persisted them, so no follower can acknowledge an
  entry the leader has not made durable;
* proposals and acknowledgements are batched: the leader sends at most one ``APPEND`` per peer per
  ``Ready`` (more only when ``max_entries_per_msg`` splits a batch) when ``ready()`` is built.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from agents.raft.log import RaftLog
from agents.raft.membership import Membership, decode_conf_change, encode_conf_change
from agents.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from agents.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    NotLeader,
    PeerProgress,
    ProposalDropped,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
    Status,
)

__all__ = ["Config", "RaftCore", "decode_conf_change", "encode_conf_change"]

_APPEND = MessageType.APPEND
_APPEND_RESP = MessageType.APPEND_RESP
_VOTE = MessageType.VOTE
_VOTE_RESP = MessageType.VOTE_RESP
_PRE_VOTE = MessageType.PRE_VOTE
_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_HEARTBEAT = MessageType.HEARTBEAT
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_SNAPSHOT = MessageType.SNAPSHOT
_TIMEOUT_NOW = MessageType.TIMEOUT_NOW
_READ_INDEX = MessageType.READ_INDEX
_READ_INDEX_RESP = MessageType.READ_INDEX_RESP
_TRANSFER_LEADER = MessageType.TRANSFER_LEADER
_TYPES = frozenset(int(t) for t in MessageType)
_NORMAL = EntryType.NORMAL

_FOLLOWER = Role.FOLLOWER
_PRE_CANDIDATE = Role.PRE_CANDIDATE
_CANDIDATE = Role.CANDIDATE
_LEADER = Role.LEADER

_TRANSFER_CTX = b"transfer"  # on VOTE: the campaign was asked for by the leader; bypasses the lease
_READ_CTX = struct.Struct(">Q")  # on HEARTBEAT(_RESP): the read-index round being confirmed

_WON, _LOST, _PENDING = 1, 2, 3


@dataclass(frozen=True)
class Config:
    id: NodeId
    election_ticks: int = 10  # election timeout randomized in [election_ticks, 2*election_ticks)
    heartbeat_ticks: int = 1  # one tick = 100 ms by default in the runner
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 4096
    max_inflight_msgs: int = 256  # pipelining window per peer
    max_uncommitted_entries: int = 100_000  # proposals beyond this raise ProposalDropped (bounded memory)
    promote_lag: int = 64  # a promoting learner is caught up when its match is this close to our last index

    def __post_init__(self) -> None:
        if self.id == NONE:
            raise ValueError("node id 0 is reserved for 'none'")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_entries_per_msg < 1 or self.max_inflight_msgs < 1 or self.max_uncommitted_entries < 1:
            raise ValueError("limits must be positive")


class _ReadRequest:
    __slots__ = ("context", "frm", "index", "seq")

    def __init__(self, seq: int, index: int, context: bytes, frm: NodeId) -> None:
        self.seq = seq
        self.index = index
        self.context = context
        self.frm = frm


class RaftCore:
    __slots__ = (
        "_cfg",
        "_conf",
        "_election_elapsed",
        "_heartbeat_elapsed",
        "_id",
        "_lead",
        "_log",
        "_msgs",
        "_need_bcast",
        "_need_read_hb",
        "_pending_conf_index",
        "_prev_hs",
        "_prev_ss",
        "_prs",
        "_randomized_timeout",
        "_read_seq",
        "_read_states",
        "_reads",
        "_reads_waiting",
        "_rng",
        "_self_pr",
        "_snapshot",
        "_state",
        "_term",
        "_transfer_elapsed",
        "_transferee",
        "_vote",
        "_votes",
    )

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        *,
        hard_state: HardState = HardState(),
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        conf: ConfState | None = None,
    ) -> None:
        """Start from what storage loaded, or bootstrap.

        * restart: ``snapshot`` + ``entries`` (those after it) + ``hard_state``; membership is the
          snapshot's configuration, else ``conf`` (if given), then every configuration entry of the log;
        * fresh cluster: nothing loaded and ``conf`` with voters: the bootstrap entries are written (see
          the module docstring) and appear in the first ``Ready``;
        * joining member: nothing loaded and no ``conf``: it waits for a leader to contact it.
        """
        self._cfg = config
        self._id = config.id
        self._rng = rng
        snap_index = snapshot.meta.index if snapshot is not None else 0
        snap_term = snapshot.meta.term if snapshot is not None else 0
        ents = list(entries)
        for i, e in enumerate(ents):
            if e.index != snap_index + 1 + i:
                raise ValueError(f"entries must follow the snapshot contiguously (got {e.index} at {i})")
        self._log = RaftLog(snap_index, snap_term, ents)
        self._snapshot = snapshot
        base = snapshot.meta.conf if snapshot is not None else (conf or ConfState())
        self._conf = Membership(base)
        for e in ents:
            if e.type == EntryType.CONF_CHANGE:
                self._conf.apply(e.index, e.data)

        term, vote, commit = hard_state.term, hard_state.vote, hard_state.commit
        bootstrap = (
            snapshot is None
            and not ents
            and hard_state == HardState()
            and conf is not None
            and bool(conf.voters)
        )
        if bootstrap:
            assert conf is not None
            changes = [ConfChange(ConfChangeType.ADD_VOTER, v) for v in sorted(conf.voters)]
            changes += [ConfChange(ConfChangeType.ADD_LEARNER, n) for n in sorted(conf.learners)]
            self._conf.reset(ConfState())
            for i, cc in enumerate(changes, start=1):
                e = Entry(1, i, EntryType.CONF_CHANGE, encode_conf_change(cc))
                self._log.entries.append(e)
                self._conf.apply(i, e.data)
            self._log.persist_idx = 0  # to be persisted with the first Ready
            term, vote, commit = 1, NONE, len(changes)
        else:
            # A torn write can keep entries but lose the hard state written after them; terms in the log
            # never exceed the node's term, and a lost vote was never sent (the runner persists first).
            last_term = self._log.last_term()
            if last_term > term:
                term, vote = last_term, NONE
            if commit > self._log.last_index():
                raise ValueError(
                    f"hard state commit {commit} beyond the last log index {self._log.last_index()}"
                )
            commit = max(commit, snap_index)
        self._log.committed = commit
        self._term = term
        self._vote = vote
        self._lead = NONE
        self._state = _FOLLOWER
        self._prev_hs = hard_state
        self._prev_ss = SoftState(NONE, _FOLLOWER)
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._prs: dict[NodeId, Progress] = {}
        self._self_pr = Progress(0, 1, False)
        self._votes: dict[NodeId, bool] = {}
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads: deque[_ReadRequest] = deque()
        self._reads_waiting: list[tuple[bytes, NodeId]] = []
        self._read_seq = 0
        self._transferee = NONE
        self._transfer_elapsed = 0
        self._pending_conf_index = 0
        self._need_bcast = False
        self._need_read_hb = False
        self._reset_timeout()

    # ------------------------------------------------------------------------------------------------
    # Introspection
    @property
    def id(self) -> NodeId:
        return self._id

    @property
    def leader(self) -> NodeId:
        return self._lead

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        st = self._state
        if st == _FOLLOWER and self._id not in self._conf.voters and self._id in self._conf.learners:
            return Role.LEARNER
        return st

    @property
    def conf_state(self) -> ConfState:
        return self._conf.state

    def status(self) -> Status:
        log = self._log
        progress: dict[NodeId, PeerProgress] = {}
        if self._state == _LEADER:
            for pid, pr in self._prs.items():
                progress[pid] = PeerProgress(
                    pr.match, pr.next, pr.state, pid in self._conf.voters, pid == self._id or pr.recent_active
                )
        conf = self._conf.state
        return Status(
            id=self._id,
            term=self._term,
            role=self.role,
            leader=self._lead,
            commit=log.committed,
            applied=log.applied,
            first_index=log.first_index(),
            last_index=log.last_index(),
            voters=conf.voters,
            learners=conf.learners,
            progress=progress,
        )

    # ------------------------------------------------------------------------------------------------
    # Ready protocol
    def has_ready(self) -> bool:
        if self._need_bcast or self._need_read_hb:
            self._flush()
        if self._msgs or self._read_states:
            return True
        log = self._log
        if log.pending_snapshot is not None or log.has_unpersisted() or log.has_unapplied():
            return True
        hs = self._prev_hs
        if self._term != hs.term or self._vote != hs.vote or log.committed != hs.commit:
            return True
        ss = self._prev_ss
        return ss.leader != self._lead or ss.role != self.role

    def ready(self) -> Ready:
        """Everything to persist, send and apply since the last call (see ``types.py`` for the order)."""
        if self._need_bcast or self._need_read_hb:
            self._flush()
        log = self._log
        rd = Ready()
        role = self.role
        ss = self._prev_ss
        if ss.leader != self._lead or ss.role != role:
            self._prev_ss = rd.soft_state = SoftState(self._lead, role)
        hs = self._prev_hs
        if self._term != hs.term or self._vote != hs.vote or log.committed != hs.commit:
            self._prev_hs = rd.hard_state = HardState(self._term, self._vote, log.committed)
        if log.pending_snapshot is not None:
            rd.snapshot = log.pending_snapshot
            log.pending_snapshot = None
        rd.entries = log.take_unpersisted()
        rd.committed = log.take_unapplied()
        if self._msgs:
            rd.messages = self._msgs
            self._msgs = []
        if self._read_states:
            rd.read_states = self._read_states
            self._read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The runner persisted, sent and applied ``rd``."""
        log = self._log
        applied = log.applied
        if rd.snapshot is not None and rd.snapshot.meta.index > applied:
            applied = rd.snapshot.meta.index
        if rd.committed and rd.committed[-1].index > applied:
            applied = rd.committed[-1].index
        log.applied = min(applied, log.applying)

    # ------------------------------------------------------------------------------------------------
    # Requests from the local application
    def tick(self) -> None:
        if self._state == _LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout and self._promotable():
            self._election_elapsed = 0
            self._campaign(pre=self._cfg.pre_vote, transfer=False)

    def propose(self, data: bytes) -> int:
        if self._state != _LEADER:
            raise NotLeader(self._lead)
        if self._transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        log = self._log
        ents = log.entries
        last = log.snap_index + len(ents)
        if last - log.committed >= self._cfg.max_uncommitted_entries:
            raise ProposalDropped("too many uncommitted entries")
        last += 1
        ents.append(Entry(self._term, last, _NORMAL, data))
        pr = self._self_pr
        pr.match = last
        pr.next = last + 1
        self._need_bcast = True
        return last

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a membership change; one at a time (:class:`ProposalDropped` while one is pending).

        ADD_VOTER of a node that is not a caught-up learner is written as "add learner, promote when caught
        up"; the leader then proposes the promotion itself. REMOVE or DEMOTE of the leader itself starts a
        leadership transfer and raises :class:`ProposalDropped` (retry on the new leader).
        """
        if self._state != _LEADER:
            raise NotLeader(self._lead)
        if cc.node_id == NONE:
            raise ValueError("conf change needs a node id")
        if not self._can_change_conf():
            raise ProposalDropped("a configuration change is pending (or the leader is new or transferring)")
        node, typ = cc.node_id, cc.type
        if node == self._id and typ in (ConfChangeType.REMOVE, ConfChangeType.DEMOTE):
            target = self._most_up_to_date_voter()
            if target != NONE:
                self.transfer_leadership(target)
            raise ProposalDropped(
                "the leader cannot remove itself: transferring leadership first, retry there"
            )
        promote = False
        if typ == ConfChangeType.ADD_VOTER and node not in self._conf.voters:
            pr = self._prs.get(node)
            if node not in self._conf.learners or pr is None or not self._caught_up(pr):
                cc = ConfChange(ConfChangeType.ADD_LEARNER, node, cc.context)
                promote = True
        idx = self._append_leader(EntryType.CONF_CHANGE, encode_conf_change(cc, promote=promote))
        self._pending_conf_index = idx
        return idx

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` (forwarded to the leader when called on a follower)."""
        if self._state != _LEADER:
            if self._lead == NONE:
                raise NotLeader(NONE)
            self._send(Message(_TRANSFER_LEADER, self._lead, self._id, self._term, index=to))
            return
        if to == self._id or to not in self._conf.voters or to == self._transferee:
            return
        self._transferee = to
        self._transfer_elapsed = 0
        pr = self._prs[to]
        if pr.match == self._log.last_index():
            self._send(Message(_TIMEOUT_NOW, to, self._id, self._term))
        else:
            self._need_bcast = True

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; the answer appears as a ReadState with the same ``context``."""
        if self._state == _LEADER:
            self._read_request(context, self._id)
            return
        if self._lead == NONE:
            raise NotLeader(NONE)
        self._send(Message(_READ_INDEX, self._lead, self._id, self._term, context=context))

    def compact(self, index: int, data: bytes) -> None:
        """The application's snapshot ``data`` covers the log up to ``index`` (<= what it applied).

        The snapshot comes back in the next ``Ready.snapshot`` so storage persists it and drops the log up
        to ``index`` (it keeps what follows, since it holds the entry at ``index``). The runner must not
        restore its state machine from a ``Ready.snapshot`` whose index is <= what it already applied.
        """
        log = self._log
        if index <= log.snap_index:
            return
        if index > log.applying:
            raise ValueError(f"cannot compact to {index}: only {log.applying} was handed out to apply")
        term = log.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, self._conf.conf_at(index)), data)
        log.compact(index, term)
        self._conf.compact(index)
        self._snapshot = snap
        log.pending_snapshot = snap

    def force_new_cluster(self) -> None:
        """Disaster recovery: keep what this node knows is committed, become the only voter.

        The uncommitted tail is dropped and replaced (at a new term) by configuration entries that make
        this node the only member, committed by fiat; they overwrite the tail in the next ``Ready``. The
        node then elects itself at its next election timeout.
        """
        log = self._log
        self._become_follower(self._term + 1, NONE)
        if log.last_index() > log.committed:
            self._conf.rollback(log.committed + 1)
            log.truncate_after(log.committed)
        conf = self._conf.state
        changes: list[ConfChange] = []
        if self._id not in conf.voters:
            if self._id not in conf.learners:
                changes.append(ConfChange(ConfChangeType.ADD_LEARNER, self._id))
            changes.append(ConfChange(ConfChangeType.ADD_VOTER, self._id))
        changes += [
            ConfChange(ConfChangeType.REMOVE, n) for n in conf.voters + conf.learners if n != self._id
        ]
        new: list[Entry] = []
        idx = log.last_index()
        for cc in changes:
            idx += 1
            new.append(Entry(self._term, idx, EntryType.CONF_CHANGE, encode_conf_change(cc)))
        if not new:  # still write one entry so the runner's log drops the abandoned tail
            new.append(Entry(self._term, idx + 1))
        log.truncate_and_append(new)
        for e in new:
            if e.type == EntryType.CONF_CHANGE:
                self._conf.apply(e.index, e.data)
        log.committed = log.last_index()
        self._prs = {}
        self._election_elapsed = self._randomized_timeout  # campaign on the next tick

    def report_unreachable(self, peer: NodeId) -> None:
        if self._state != _LEADER:
            return
        pr = self._prs.get(peer)
        if pr is not None and peer != self._id and pr.state == REPLICATE:
            pr.become_probe()

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        """The transport delivered (``ok``) or failed to deliver the snapshot sent to ``peer``."""
        if self._state != _LEADER:
            return
        pr = self._prs.get(peer)
        if pr is None or pr.state != SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # resume on the next APPEND_RESP (ok) or heartbeat response (failed)

    # ------------------------------------------------------------------------------------------------
    # Messages from peers
    def step(self, m: Message) -> None:
        """Handle one message. Never raises: stale, duplicate, misaddressed or malformed ones are dropped."""
        if not self._valid(m):
            return
        typ = m.type
        if m.term > self._term:
            if typ in (_VOTE, _PRE_VOTE):
                cfg = self._cfg
                if (
                    cfg.check_quorum
                    and self._lead != NONE
                    and self._election_elapsed < cfg.election_ticks
                    and m.context != _TRANSFER_CTX
                ):
                    return  # leader lease: we heard from a leader recently, ignore the disruption
            if typ == _PRE_VOTE or (typ == _PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms
            elif typ in (_READ_INDEX, _READ_INDEX_RESP, _TRANSFER_LEADER):
                return  # requests from a newer term: we are stale, a leader will reach us soon
            elif typ in (_APPEND, _HEARTBEAT, _SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self._term:
            cfg = self._cfg
            if (cfg.check_quorum or cfg.pre_vote) and (typ in (_HEARTBEAT, _APPEND)):
                # A stale leader (or a node that was partitioned) learns our term and steps down.
                self._send(Message(_APPEND_RESP, m.frm, self._id, self._term))
            elif typ == _PRE_VOTE:
                self._send(Message(_PRE_VOTE_RESP, m.frm, self._id, self._term, reject=True))
            return

        if typ in (_VOTE, _PRE_VOTE):
            self._handle_vote_request(m)
            return
        st = self._state
        if st == _LEADER:
            self._step_leader(m)
        elif st == _FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _valid(self, m: Message) -> bool:
        if m.to != self._id or m.frm == NONE or m.frm == self._id or m.term <= 0:
            return False
        if m.type not in _TYPES or m.index < 0 or m.log_term < 0 or m.commit < 0 or m.reject_hint < 0:
            return False
        ents = m.entries
        if ents:
            first = ents[0]
            last = ents[-1]
            if (
                first.index != m.index + 1
                or last.index != m.index + len(ents)
                or last.term > m.term
                or first.term < m.log_term
                or first.term > last.term
            ):
                return False
        if m.type == _SNAPSHOT:
            snap = m.snapshot
            if snap is None or snap.meta.index <= 0 or not 0 < snap.meta.term <= m.term:
                return False
        return True

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == _PRE_VOTE
        resp = _PRE_VOTE_RESP if pre else _VOTE_RESP
        can_vote = (
            self._vote == m.frm
            or (self._vote == NONE and self._lead == NONE)
            or (pre and m.term > self._term)
        )
        if can_vote and self._log.is_up_to_date(m.index, m.log_term):
            # The grant carries the candidate's term (a pre-vote grant must not look stale to it).
            self._send(Message(resp, m.frm, self._id, m.term))
            if not pre:
                self._election_elapsed = 0
                self._vote = m.frm  # in this Ready's hard_state, persisted before the grant is sent
        else:
            self._send(Message(resp, m.frm, self._id, self._term, reject=True))

    def _step_follower(self, m: Message) -> None:
        typ = m.type
        if typ == _APPEND:
            self._election_elapsed = 0
            self._lead = m.frm
            self._handle_append(m)
        elif typ == _HEARTBEAT:
            self._election_elapsed = 0
            self._lead = m.frm
            log = self._log
            log.commit_to(min(m.commit, log.last_index()))
            self._send(Message(_HEARTBEAT_RESP, m.frm, self._id, self._term, context=m.context))
        elif typ == _SNAPSHOT:
            self._election_elapsed = 0
            self._lead = m.frm
            self._handle_snapshot(m)
        elif typ == _TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre=False, transfer=True)
        elif typ == _READ_INDEX_RESP and m.frm == self._lead:
            self._read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        typ = m.type
        if typ in (_APPEND, _HEARTBEAT, _SNAPSHOT):
            self._become_follower(self._term, m.frm)  # a leader exists for our term
            self._step_follower(m)
            return
        pre = self._state == _PRE_CANDIDATE
        if typ != (_PRE_VOTE_RESP if pre else _VOTE_RESP):
            return
        res = self._poll(m.frm, not m.reject)
        if res == _WON:
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
        elif res == _LOST:
            self._become_follower(self._term, NONE)

    def _step_leader(self, m: Message) -> None:
        typ = m.type
        if typ == _APPEND_RESP:
            self._handle_append_resp(m)
        elif typ == _HEARTBEAT_RESP:
            self._handle_heartbeat_resp(m)
        elif typ == _READ_INDEX:
            if m.frm in self._prs:
                self._read_request(m.context, m.frm)
        elif typ == _TRANSFER_LEADER:
            self.transfer_leadership(m.index or m.frm)

    # ------------------------------------------------------------------------------------------------
    # Follower side of replication
    def _handle_append(self, m: Message) -> None:
        log = self._log
        if m.index < log.committed:
            self._send(Message(_APPEND_RESP, m.frm, self._id, self._term, index=log.committed))
            return
        ents = m.entries
        if log.match_term(m.index, m.log_term):
            last_new = m.index + len(ents)
            if ents:
                ci = log.find_conflict(ents)
                if ci:
                    if ci <= log.committed:
                        return  # would rewrite committed entries: a forged or corrupt message
                    self._append_follower(ents[ci - m.index - 1 :])
            log.commit_to(min(m.commit, last_new))
            self._send(Message(_APPEND_RESP, m.frm, self._id, self._term, index=last_new))
            return
        hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        self._send(
            Message(
                _APPEND_RESP,
                m.frm,
                self._id,
                self._term,
                log_term=log.term(hint) or 0,
                index=m.index,
                reject=True,
                reject_hint=hint,
            )
        )

    def _append_follower(self, ents: tuple[Entry, ...]) -> None:
        log = self._log
        first = ents[0].index
        if first <= log.last_index():
            self._conf.rollback(first)
        log.truncate_and_append(ents)
        for e in ents:
            if e.type:
                self._conf.apply(e.index, e.data)

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None  # checked by _valid
        log = self._log
        idx, term = snap.meta.index, snap.meta.term
        if idx <= log.committed or log.match_term(idx, term):
            # Nothing to install (or our log already has it): just learn the commit index.
            if idx > log.committed:
                log.commit_to(idx)
            self._send(Message(_APPEND_RESP, m.frm, self._id, self._term, index=log.committed))
            return
        log.restore(snap)
        self._snapshot = snap
        self._conf.reset(snap.meta.conf)
        self._send(Message(_APPEND_RESP, m.frm, self._id, self._term, index=log.last_index()))

    # ------------------------------------------------------------------------------------------------
    # Leader side of replication
    def _append_leader(self, typ: EntryType, data: bytes) -> int:
        log = self._log
        idx = log.last_index() + 1
        log.entries.append(Entry(self._term, idx, typ, data))
        if typ == EntryType.CONF_CHANGE and self._conf.apply(idx, data):
            self._on_conf_changed()
        self._self_pr.match = idx
        self._self_pr.next = idx + 1
        self._need_bcast = True
        return idx

    def _handle_append_resp(self, m: Message) -> None:
        pr = self._prs.get(m.frm)
        log = self._log
        if pr is None or m.index > log.last_index():
            return
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = log.find_conflict_by_term(hint, m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._need_bcast = True
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT:
            if pr.match >= pr.pending_snapshot or pr.match + 1 >= log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.free_le(m.index)
        self._maybe_commit()
        self._need_bcast = True
        if m.frm == self._transferee and pr.match == log.last_index():
            self._send(Message(_TIMEOUT_NOW, m.frm, self._id, self._term))
        if pr.learner and m.frm in self._conf.promoting:
            self._maybe_promote(m.frm, pr)

    def _handle_heartbeat_resp(self, m: Message) -> None:
        pr = self._prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == REPLICATE and len(pr.inflights) >= pr.max_inflight:
            pr.inflights.popleft()  # make room: the follower is alive, one lost APPEND must not stall us
        if pr.match < self._log.last_index():
            # It is behind: if everything was already sent (and lost), an empty APPEND at our last index
            # makes it reject and tells us where to resume.
            self._send_append(m.frm, pr, True)
        elif pr.sent_commit < self._log.committed:
            self._need_bcast = True
        ctx = m.context
        if len(ctx) == 8 and self._reads:
            seq = _READ_CTX.unpack(ctx)[0]
            if pr.read_ack < seq <= self._read_seq:
                pr.read_ack = seq
                self._advance_reads()

    def _flush(self) -> None:
        """Send what is pending: one APPEND per peer for everything proposed/acknowledged since the last
        flush (batching), and one heartbeat round for new read-index requests."""
        self._need_bcast = False
        if self._state != _LEADER:
            self._need_read_hb = False
            return
        self._maybe_commit()
        commit = self._log.committed
        last = self._log.last_index()
        me = self._id
        for pid, pr in self._prs.items():
            if pid == me:
                continue
            if self._send_append(pid, pr, pr.sent_commit < commit or pr.state == PROBE):
                while pr.state == REPLICATE and pr.next <= last and self._send_append(pid, pr, False):
                    pass
        if self._need_read_hb:
            self._need_read_hb = False
            self._bcast_heartbeat()

    def _send_append(self, to: NodeId, pr: Progress, allow_empty: bool) -> bool:
        if pr.is_paused():
            return False
        log = self._log
        nxt = pr.next
        prev = nxt - 1
        prev_term = log.term(prev)
        if prev_term is None or nxt <= log.snap_index:
            return self._send_snapshot(to, pr)
        last = log.last_index()
        if nxt <= last:
            hi = nxt + self._cfg.max_entries_per_msg
            ents = tuple(log.slice(nxt, hi if hi <= last + 1 else last + 1))
        elif allow_empty:
            ents = ()
        else:
            return False
        commit = log.committed
        self._msgs.append(Message(_APPEND, to, self._id, self._term, prev_term, prev, ents, commit))
        pr.sent_commit = commit
        pr.sent(prev + len(ents), len(ents))
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self._snapshot
        if snap is None:  # pragma: no cover - a compacted log always has its snapshot
            return False
        self._msgs.append(
            Message(_SNAPSHOT, to, self._id, self._term, snap.meta.term, snap.meta.index, snapshot=snap)
        )
        pr.become_snapshot(snap.meta.index)
        return True

    def _bcast_heartbeat(self) -> None:
        ctx = _READ_CTX.pack(self._read_seq) if self._reads else b""
        commit = self._log.committed
        me = self._id
        limit = 2 * self._cfg.election_ticks
        for pid, pr in self._prs.items():
            if pid == me:
                continue
            self._msgs.append(
                Message(_HEARTBEAT, pid, me, self._term, commit=min(pr.match, commit), context=ctx)
            )
            if pr.state == SNAPSHOT:
                # No report_snapshot and no ack for a long time: assume the snapshot was lost, probe again.
                pr.snap_rounds += 1
                if pr.snap_rounds > limit:
                    pr.become_probe()

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a majority of voters stores -- only for entries of our own term
        (Raft's Figure 8: older entries commit indirectly)."""
        voters = self._conf.voter_list
        if not voters:
            return False
        prs = self._prs
        if len(voters) == 1:
            pr = prs.get(voters[0])
            idx = pr.match if pr is not None else 0
        else:
            ms = sorted([prs[v].match for v in voters], reverse=True)
            idx = ms[len(voters) // 2]
        log = self._log
        if idx <= log.committed or log.term(idx) != self._term:
            return False
        first_in_term = log.term(log.committed) != self._term
        log.committed = idx
        if first_in_term and self._reads_waiting:
            waiting = self._reads_waiting
            self._reads_waiting = []
            for ctx, frm in waiting:
                self._read_request(ctx, frm)
        return True

    def _tick_leader(self) -> None:
        cfg = self._cfg
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._transferee != NONE:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_ticks:
                self._transferee = NONE  # the target did not take over in time: give up
        if self._election_elapsed >= cfg.election_ticks:
            self._election_elapsed = 0
            if cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self._term, NONE)
                    return
                for pid, pr in self._prs.items():
                    if pid != self._id:
                        pr.recent_active = False
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()
            for pid in self._conf.promoting:
                lp = self._prs.get(pid)
                if lp is not None:
                    self._maybe_promote(pid, lp)

    def _quorum_active(self) -> bool:
        voters = self._conf.voter_list
        active = 0
        for v in voters:
            if v == self._id:
                active += 1
            else:
                pr = self._prs.get(v)
                if pr is not None and pr.recent_active:
                    active += 1
        return active >= len(voters) // 2 + 1

    # ------------------------------------------------------------------------------------------------
    # Read index
    def _read_request(self, context: bytes, frm: NodeId) -> None:
        log = self._log
        if log.term(log.committed) != self._term:
            # The commit index of a new leader may lag; wait for its first entry to commit.
            self._reads_waiting.append((context, frm))
            return
        voters = self._conf.voter_list
        if len(voters) == 1 and voters[0] == self._id:
            self._respond_read(log.committed, context, frm)
            return
        self._read_seq += 1
        self._reads.append(_ReadRequest(self._read_seq, log.committed, context, frm))
        self._need_read_hb = True

    def _advance_reads(self) -> None:
        """Release the read requests a quorum of voters has confirmed our leadership for."""
        voters = self._conf.voter_list
        if not voters or not self._reads:
            return
        prs = self._prs
        acks = sorted(
            [self._read_seq if v == self._id else (prs[v].read_ack if v in prs else 0) for v in voters],
            reverse=True,
        )
        confirmed = acks[len(voters) // 2]
        reads = self._reads
        while reads and reads[0].seq <= confirmed:
            r = reads.popleft()
            self._respond_read(r.index, r.context, r.frm)

    def _respond_read(self, index: int, context: bytes, frm: NodeId) -> None:
        if frm == self._id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(Message(_READ_INDEX_RESP, frm, self._id, self._term, index=index, context=context))

    # ------------------------------------------------------------------------------------------------
    # Membership
    def _promotable(self) -> bool:
        return self._id in self._conf.voters

    def _can_change_conf(self) -> bool:
        log = self._log
        return (
            self._state == _LEADER
            and self._transferee == NONE
            and self._pending_conf_index <= log.committed
            and log.term(log.committed) == self._term
        )

    def _caught_up(self, pr: Progress) -> bool:
        return pr.state == REPLICATE and self._log.last_index() - pr.match <= self._cfg.promote_lag

    def _maybe_promote(self, node: NodeId, pr: Progress) -> None:
        if node in self._conf.promoting and self._caught_up(pr) and self._can_change_conf():
            data = encode_conf_change(ConfChange(ConfChangeType.ADD_VOTER, node))
            self._pending_conf_index = self._append_leader(EntryType.CONF_CHANGE, data)

    def _most_up_to_date_voter(self) -> NodeId:
        best, best_match = NONE, -1
        for v in self._conf.voter_list:
            pr = self._prs.get(v)
            if v != self._id and pr is not None and pr.match > best_match:
                best, best_match = v, pr.match
        return best

    def _on_conf_changed(self) -> None:
        """Leader: keep one Progress per member; the quorum may have changed."""
        if self._state != _LEADER:
            return
        conf = self._conf
        members = conf.voters | conf.learners
        nxt = self._log.last_index() + 1
        for n in members:
            if n not in self._prs:
                self._prs[n] = Progress(nxt, self._cfg.max_inflight_msgs, n not in conf.voters)
        for n in list(self._prs):
            if n not in members and n != self._id:
                del self._prs[n]
        for n, pr in self._prs.items():
            pr.learner = n not in conf.voters
        if self._transferee != NONE and self._transferee not in conf.voters:
            self._transferee = NONE
        self._maybe_commit()
        self._advance_reads()

    # ------------------------------------------------------------------------------------------------
    # Role changes
    def _reset_timeout(self) -> None:
        et = self._cfg.election_ticks
        self._randomized_timeout = et + self._rng.randrange(et)

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = NONE
        self._lead = NONE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_timeout()
        self._votes = {}
        self._transferee = NONE
        self._reads.clear()
        self._reads_waiting = []
        self._need_read_hb = False

    def _become_follower(self, term: int, lead: NodeId) -> None:
        self._reset(term)
        self._lead = lead
        self._state = _FOLLOWER
        self._prs = {}

    def _become_leader(self) -> None:
        self._reset(self._term)
        self._state = _LEADER
        self._lead = self._id
        log = self._log
        last = log.last_index()
        conf = self._conf
        mi = self._cfg.max_inflight_msgs
        self._prs = {n: Progress(last + 1, mi, n not in conf.voters) for n in conf.voters | conf.learners}
        if self._id not in self._prs:  # pragma: no cover - only voters campaign
            self._prs[self._id] = Progress(last + 1, mi, True)
        me = self._prs[self._id]
        me.match = last
        me.become_replicate()
        me.recent_active = True
        self._self_pr = me
        self._pending_conf_index = last
        self._append_leader(EntryType.NORMAL, b"")  # commits everything before it (Raft section 5.4.2)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._state = _PRE_CANDIDATE
            self._lead = NONE
            self._votes = {}
            self._reset_timeout()
            typ, term = _PRE_VOTE, self._term + 1
        else:
            self._reset(self._term + 1)
            self._state = _CANDIDATE
            self._vote = self._id
            typ, term = _VOTE, self._term
        if self._poll(self._id, True) == _WON:  # a single voter wins at once
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        log = self._log
        li, lt = log.last_index(), log.last_term()
        ctx = _TRANSFER_CTX if transfer else b""
        for v in self._conf.voter_list:
            if v != self._id:
                self._send(Message(typ, v, self._id, term, lt, li, context=ctx))

    def _poll(self, frm: NodeId, granted: bool) -> int:
        voters = self._conf.voter_list
        if frm not in self._conf.voters:
            return _PENDING
        self._votes.setdefault(frm, granted)
        yes = sum(1 for v in voters if self._votes.get(v) is True)
        no = sum(1 for v in voters if self._votes.get(v) is False)
        q = len(voters) // 2 + 1
        if yes >= q:
            return _WON
        if no > len(voters) - q:
            return _LOST
        return _PENDING

    def _send(self, m: Message) -> None:
        self._msgs.append(m)
