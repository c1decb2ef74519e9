"""Deterministic simulation of a Raft cluster built from the real :class:`RaftCore`.

Why: Raft bugs hide in interleavings (a vote sent before it is durable, a stale ack, a truncated
configuration) that real clusters hit once a month. Here one seed fixes every choice -- message delays,
drops, duplicates, partitions, crashes (losing unsynced writes), membership changes, leadership
transfers, compactions, client operations -- so any failure replays exactly.

Model of the runner (``agents/raft/node.py`` and ``types.py``): for each ``Ready`` a node writes the
snapshot, the entries and the hard state, fsyncs, sends the messages, restores/applies, serves reads and
calls ``advance``. A crash may strike before the fsync (a random prefix of the writes survives) or after
it (nothing is sent).

Time: one step is one unit of simulated time; every node ticks every ``tick_every`` steps (with its own
phase); messages take 1..``max_delay`` steps.

Checked on every step (incrementally): election safety, one vote per node per term (across restarts),
leader append-only, log matching, leader completeness and state machine safety. At the end: the client
history is linearizable, and after healing every fault a leader commits a proposal within 10 election
timeouts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from agents.raft.core import Config, RaftCore
from agents.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    Ready,
    Role,
    Snapshot,
)
from tests.sim.linearizability import Op, check_history

REPLAY_CMD = ".venv/bin/python -m pytest tests/sim -k replay --seed {seed}"


class Violation(AssertionError):
    """A safety or liveness property failed."""


@dataclass
class Scenario:
    """Everything a run depends on, derived from its seed."""

    seed: int
    nodes: int
    steps: int
    membership: bool
    election_ticks: int
    tick_every: int
    max_delay: int
    drop: float
    dup: float
    crash_rate: float
    partition_rate: float
    heal_rate: float
    majority_crashes: bool
    transfer_rate: float
    conf_rate: float
    compact_every: int
    max_inflight: int
    max_entries: int
    clients: int
    client_rate: float
    flaky_leaders: float  # chance that a newly elected leader crashes within a few ticks

    @classmethod
    def from_seed(cls, seed: int, steps: int = 2000) -> Scenario:
        r = random.Random(seed * 7919 + 17)
        election_ticks = r.choice((5, 6, 8))
        tick_every = r.choice((2, 3, 4))
        # a round trip stays well under an election timeout, as on any network Raft is tuned for
        max_delay = min(r.choice((2, 4, 6, 10)), max(1, election_ticks * tick_every // 4))
        return cls(
            seed=seed,
            nodes=r.choice((3, 3, 5)),
            steps=steps,
            membership=r.random() < 0.4,
            election_ticks=election_ticks,
            tick_every=tick_every,
            max_delay=max_delay,
            drop=r.choice((0.0, 0.01, 0.05, 0.15)),
            dup=r.choice((0.0, 0.02, 0.1)),
            crash_rate=r.choice((0.0, 0.003, 0.01, 0.02)),
            partition_rate=r.choice((0.0, 0.003, 0.01, 0.02)),
            heal_rate=r.choice((0.005, 0.02, 0.05)),
            majority_crashes=r.random() < 0.2,
            transfer_rate=r.choice((0.0, 0.002)),
            conf_rate=r.choice((0.003, 0.008)),
            compact_every=r.choice((10, 30, 100)),
            max_inflight=r.choice((2, 4, 64)),
            max_entries=r.choice((2, 4, 16, 256)),
            clients=r.choice((2, 4)),
            client_rate=r.choice((0.05, 0.2)),
            flaky_leaders=r.choice((0.0, 0.0, 0.3, 0.6)),
        )


# ----------------------------------------------------------------------------------------------------
# Disk


class Disk:
    """Durable state of one node: what survived the last fsync (the runner's storage contract).

    A snapshot write keeps the log after the snapshot's index when the log has the snapshot's last entry
    (a compaction), else it replaces the whole log (a snapshot installed from the leader).
    """

    __slots__ = ("entries", "hs", "snap")

    def __init__(self) -> None:
        self.hs = HardState()
        self.snap: Snapshot | None = None
        self.entries: list[Entry] = []

    def first(self) -> int:
        return (self.snap.meta.index if self.snap is not None else 0) + 1

    def write_snapshot(self, s: Snapshot) -> None:
        pos = s.meta.index - self.first()
        if 0 <= pos < len(self.entries) and self.entries[pos].term == s.meta.term:
            del self.entries[: pos + 1]
        else:
            self.entries = []
        self.snap = s

    def write_entries(self, ents: list[Entry]) -> None:
        pos = ents[0].index - self.first()
        if not 0 <= pos <= len(self.entries):
            raise Violation(f"Ready.entries start at {ents[0].index}, not contiguous with the stored log")
        del self.entries[pos:]
        self.entries.extend(ents)


# ----------------------------------------------------------------------------------------------------
# Nodes, clients and the checker


class PendingWrite:
    __slots__ = ("data", "op")

    def __init__(self, op: Op, data: bytes) -> None:
        self.op = op
        self.data = data


class SimNode:
    __slots__ = (
        "alive",
        "applied",
        "bootstrap",
        "core",
        "crash_point",
        "disk",
        "id",
        "kv",
        "phase",
        "reads",
        "serving",
        "writes",
    )

    def __init__(self, nid: NodeId, bootstrap: ConfState | None, phase: int) -> None:
        self.id = nid
        self.bootstrap = bootstrap
        self.phase = phase
        self.disk = Disk()
        self.alive = False
        self.core: RaftCore
        self.kv: dict[str, str] = {}
        self.applied = 0
        self.crash_point: str | None = None
        self.writes: dict[int, PendingWrite] = {}  # log index -> client write proposed here
        self.reads: dict[bytes, Op] = {}  # read context -> op waiting for its read index
        self.serving: list[tuple[int, Op]] = []  # (read index, op) waiting for applied >= index


class Client:
    __slots__ = ("busy_until", "id", "op", "seq")

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.seq = 0
        self.op: Op | None = None
        self.busy_until = 0


class Checker:
    """Raft's safety properties (Figure 3 of the paper), checked incrementally."""

    __slots__ = ("applied", "committed_max", "entries", "leader_last", "leaders", "votes")

    def __init__(self) -> None:
        self.leaders: dict[int, NodeId] = {}  # term -> leader (election safety)
        self.votes: dict[tuple[NodeId, int], NodeId] = {}  # (voter, term) -> candidate granted
        # (index, term) -> (type, data, term of the previous entry)
        self.entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) applied by anyone
        self.committed_max = (0, 0)  # (index, term) highest entry known committed
        self.leader_last: dict[NodeId, tuple[int, int, int]] = {}  # node -> (term, last index, its term)

    def on_entries(self, node: SimNode, ents: list[Entry]) -> None:
        """Log matching: an (index, term) pair always denotes the same entry with the same predecessor."""
        log = node.core._log
        prev_term = log.term(ents[0].index - 1)
        if prev_term is None:
            raise Violation(f"node {node.id}: persisted entries {ents[0].index}.. do not follow its log")
        table = self.entries
        for e in ents:
            key = (e.index, e.term)
            val = (int(e.type), e.data, prev_term)
            old = table.get(key)
            if old is None:
                table[key] = val
            elif old != val:
                raise Violation(
                    f"log matching: node {node.id} has a different entry at index {e.index} term {e.term}"
                )
            prev_term = e.term

    def on_vote(self, voter: NodeId, term: int, candidate: NodeId) -> None:
        old = self.votes.setdefault((voter, term), candidate)
        if old != candidate:
            raise Violation(f"node {voter} voted for both {old} and {candidate} in term {term}")

    def on_apply(self, node: SimNode, e: Entry) -> None:
        if e.index != node.applied + 1:
            raise Violation(f"node {node.id} applied index {e.index} after {node.applied}")
        val = (e.term, e.data)
        old = self.applied.setdefault(e.index, val)
        if old != val:
            raise Violation(
                f"state machine safety: node {node.id} applied a different entry at index {e.index}"
            )

    def after(self, node: SimNode) -> None:
        """Per-node checks after it processed input and its Ready."""
        core = node.core
        log = core._log
        c = log.committed
        if c > self.committed_max[0]:
            t = log.term(c)
            if t is not None:
                self.committed_max = (c, t)
        if core.role != Role.LEADER:
            self.leader_last.pop(node.id, None)
            return
        term = core.term
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            raise Violation(f"election safety: {other} and {node.id} both leaders of term {term}")
        last = log.last_index()
        prev = self.leader_last.get(node.id)
        if (
            prev is not None
            and prev[0] == term
            and prev[1] >= log.first_index()
            and (last < prev[1] or log.term(prev[1]) != prev[2])
        ):
            raise Violation(f"leader append-only: leader {node.id} of term {term} rewrote its log")
        self.leader_last[node.id] = (term, last, log.last_term())
        ci, ct = self.committed_max
        if ct < term and ci > log.snap_index and log.term(ci) != ct:
            raise Violation(f"leader completeness: leader {node.id} (term {term}) lacks committed entry {ci}")


# ----------------------------------------------------------------------------------------------------
# The simulation


def _encode_kv(kv: dict[str, str]) -> bytes:
    return json.dumps(kv, sort_keys=True).encode()


class Sim:
    KEYS = ("a", "b", "c")

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.time = 0
        self.clock = 0  # logical time for the history (strictly increasing per event)
        self.net: dict[int, list[Message]] = {}
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.nodes: dict[NodeId, SimNode] = {}
        self.checker = Checker()
        self.history: list[Op] = []
        self.failed: set[int] = set()  # id() of writes known never to have taken effect
        self.clients = [Client(i) for i in range(sc.clients)]
        self.next_client = sc.clients
        self.next_id = sc.nodes + 1
        self.faults = True
        self.drop = sc.drop
        self.dup = sc.dup
        self.dirty: set[NodeId] = set()
        self.seen_term = 0
        self.doomed: list[tuple[int, NodeId]] = []  # (time, node): leaders scheduled to crash
        boot = ConfState(voters=tuple(range(1, sc.nodes + 1)))
        for i in range(1, sc.nodes + 1):
            self._add_node(i, boot)

    # -- nodes -------------------------------------------------------------------------------------
    def _add_node(self, nid: NodeId, boot: ConfState | None) -> SimNode:
        node = SimNode(nid, boot, self.rng.randrange(self.sc.tick_every))
        self.nodes[nid] = node
        self._start(node)
        return node

    def _config(self, nid: NodeId) -> Config:
        sc = self.sc
        return Config(
            id=nid,
            election_ticks=sc.election_ticks,
            heartbeat_ticks=1,
            max_inflight_msgs=sc.max_inflight,
            max_entries_per_msg=sc.max_entries,
            promote_lag=8,
        )

    def _start(self, node: SimNode) -> None:
        d = node.disk
        node.core = RaftCore(
            self._config(node.id),
            random.Random(self.rng.getrandbits(64)),
            hard_state=d.hs,
            snapshot=d.snap,
            entries=list(d.entries),
            conf=node.bootstrap,
        )
        node.kv = json.loads(d.snap.data) if d.snap is not None else {}
        node.applied = d.snap.meta.index if d.snap is not None else 0
        node.alive = True
        node.crash_point = None
        node.writes.clear()
        node.reads.clear()
        node.serving.clear()
        self.dirty.add(node.id)

    def _crash(self, node: SimNode) -> None:
        node.alive = False
        self.dirty.discard(node.id)
        for w in node.writes.values():
            self._abandon(w.op)
        for op in node.reads.values():
            self._abandon(op)
        for _, op in node.serving:
            self._abandon(op)

    # -- network -----------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if (m.frm, m.to) in self.blocked or (self.drop and self.rng.random() < self.drop):
            self._dropped(m)
            return
        rng = self.rng
        copies = 2 if self.dup and rng.random() < self.dup else 1
        for _ in range(copies):
            t = self.time + 1 + rng.randrange(self.sc.max_delay)
            bucket = self.net.get(t)
            if bucket is None:
                self.net[t] = [m]
            else:
                bucket.append(m)

    def _dropped(self, m: Message) -> None:
        if m.type == MessageType.SNAPSHOT:
            sender = self.nodes.get(m.frm)
            if sender is not None and sender.alive:
                sender.core.report_snapshot(m.to, False)
                self.dirty.add(m.frm)

    def _deliver(self, m: Message) -> None:
        node = self.nodes.get(m.to)
        if node is None or not node.alive:
            self._dropped(m)
            return
        node.core.step(m)
        self.dirty.add(m.to)
        if m.type == MessageType.SNAPSHOT:
            sender = self.nodes.get(m.frm)
            if sender is not None and sender.alive:
                sender.core.report_snapshot(m.to, True)
                self.dirty.add(m.frm)

    # -- the runner's Ready loop ---------------------------------------------------------------------
    def _process(self, node: SimNode) -> None:
        core = node.core
        rounds = 0
        while node.alive and core.has_ready():
            rounds += 1
            if rounds > 50:
                raise Violation(f"node {node.id}: has_ready() never settles")
            self._process_ready(node, core.ready())
        if node.alive:
            self.checker.after(node)

    def _process_ready(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        disk = node.disk
        ck = self.checker
        if rd.entries:
            ck.on_entries(node, rd.entries)
        writes: list[tuple[str, object]] = []
        if rd.snapshot is not None:
            writes.append(("snap", rd.snapshot))
        if rd.entries:
            ents = rd.entries
            cut = self.rng.randrange(len(ents)) if len(ents) > 1 and node.crash_point else 0
            if cut:
                writes.append(("ents", ents[:cut]))
                writes.append(("ents", ents[cut:]))
            else:
                writes.append(("ents", ents))
        if rd.hard_state is not None:
            writes.append(("hs", rd.hard_state))
        crash = node.crash_point
        if crash == "before_sync":
            writes = writes[: self.rng.randrange(len(writes) + 1)]
        for kind, val in writes:
            if kind == "snap":
                assert isinstance(val, Snapshot)
                disk.write_snapshot(val)
            elif kind == "ents":
                assert isinstance(val, list)
                disk.write_entries(val)
            else:
                assert isinstance(val, HardState)
                if val.term < disk.hs.term:
                    raise Violation(f"node {node.id}: term went back from {disk.hs.term} to {val.term}")
                disk.hs = val
        if crash is not None:
            self._crash(node)
            return
        # fsync done: now the messages may leave
        hs = disk.hs
        for m in rd.messages:
            if m.type == MessageType.VOTE_RESP and not m.reject:
                if hs.term < m.term or (hs.term == m.term and hs.vote != m.to):
                    raise Violation(f"node {node.id} granted a vote to {m.to} in term {m.term} not durably")
                ck.on_vote(node.id, m.term, m.to)
            self._send(m)
        if rd.snapshot is not None and rd.snapshot.meta.index > node.applied:
            node.kv = json.loads(rd.snapshot.data)
            node.applied = rd.snapshot.meta.index
            self._fail_writes_below(node, node.applied)
        for e in rd.committed:
            ck.on_apply(node, e)
            node.applied = e.index
            if e.type == EntryType.NORMAL and e.data:
                k, _, v = e.data.decode().partition("=")
                node.kv[k] = v
            w = node.writes.pop(e.index, None)
            if w is not None:
                if w.data == e.data:
                    self._respond(w.op)
                else:  # another entry committed at its index: the write certainly never happened
                    self.failed.add(id(w.op))
                    self._release(w.op)
        for rs in rd.read_states:
            op = node.reads.pop(rs.context, None)
            if op is not None:
                node.serving.append((rs.index, op))
        if node.serving:
            still = []
            for idx, op in node.serving:
                if node.applied >= idx:
                    op.value = node.kv.get(op.key)
                    self._respond(op)
                else:
                    still.append((idx, op))
            node.serving = still
        core.advance(rd)
        if node.applied - core._log.snap_index >= self.sc.compact_every and self.rng.random() < 0.5:
            core.compact(node.applied, _encode_kv(node.kv))

    def _fail_writes_below(self, node: SimNode, index: int) -> None:
        """A snapshot skipped over our proposals: we cannot tell whether they committed (ret stays None)."""
        for i in [i for i in node.writes if i <= index]:
            del node.writes[i]

    # -- clients -------------------------------------------------------------------------------------
    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _respond(self, op: Op) -> None:
        op.ret = self._tick()
        self._release(op)

    def _release(self, op: Op) -> None:
        for c in self.clients:
            if c.op is op:
                c.op = None

    def _abandon(self, op: Op) -> None:
        """The client stops waiting (timeout, or its node crashed): the op stays open, a new client id
        takes the slot (one client never has two open ops)."""
        for i, c in enumerate(self.clients):
            if c.op is op:
                self.clients[i] = Client(self.next_client)
                self.next_client += 1

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for n in self.nodes.values():
            if n.alive and n.core.role == Role.LEADER and (best is None or n.core.term > best.core.term):
                best = n
        return best

    def _client_step(self) -> None:
        rng = self.rng
        sc = self.sc
        for c in list(self.clients):
            if c.op is not None:
                if self.time >= c.busy_until:
                    self._abandon(c.op)
                continue
            if rng.random() >= sc.client_rate:
                continue
            leader = self._leader()
            alive = [n for n in self.nodes.values() if n.alive]
            if not alive:
                return
            node = leader if leader is not None and rng.random() < 0.8 else rng.choice(alive)
            key = rng.choice(self.KEYS)
            c.seq += 1
            if rng.random() < 0.5:
                value = f"{c.id}.{c.seq}"
                data = f"{key}={value}".encode()
                try:
                    index = node.core.propose(data)
                except Exception:  # NotLeader / ProposalDropped: the write certainly did not happen
                    continue
                op = Op(c.id, "write", key, value, self._tick(), None)
                node.writes[index] = PendingWrite(op, data)
            else:
                ctx = f"r{c.id}.{c.seq}".encode()
                try:
                    node.core.read_index(ctx)
                except Exception:
                    continue
                op = Op(c.id, "read", key, None, self._tick(), None)
                node.reads[ctx] = op
            self.history.append(op)
            c.op = op
            c.busy_until = self.time + 4 * sc.election_ticks * sc.tick_every
            self.dirty.add(node.id)

    # -- faults ----------------------------------------------------------------------------------------
    def _members(self) -> tuple[set[NodeId], set[NodeId]]:
        """Voters and learners as the most recent leader (or any node) sees them."""
        leader = self._leader()
        src = leader or next(n for n in self.nodes.values())
        cs = src.core.conf_state
        return set(cs.voters), set(cs.learners)

    def _fault_step(self) -> None:
        rng = self.rng
        sc = self.sc
        r = rng.random
        if sc.flaky_leaders:
            leader = self._leader()
            if leader is not None and leader.core.term > self.seen_term:
                self.seen_term = leader.core.term
                if r() < sc.flaky_leaders:
                    self.doomed.append((self.time + rng.randrange(1, 3 * sc.tick_every + 1), leader.id))
            if self.doomed and self.doomed[0][0] <= self.time:
                nid = self.doomed.pop(0)[1]
                node = self.nodes[nid]
                down = sum(1 for n in self.nodes.values() if not n.alive)
                limit = len(self.nodes) if sc.majority_crashes else (len(self.nodes) - 1) // 2
                if node.alive and node.crash_point is None and down < limit:
                    node.crash_point = rng.choice(("before_sync", "after_sync"))
                    self.dirty.add(nid)
        if sc.crash_rate and r() < sc.crash_rate:
            alive = [n for n in self.nodes.values() if n.alive and n.crash_point is None]
            down = len(self.nodes) - len(alive)
            limit = len(self.nodes) if sc.majority_crashes else (len(self.nodes) - 1) // 2
            if alive and down < limit:
                leader = self._leader()
                node = (
                    leader
                    if leader is not None and leader.crash_point is None and r() < 0.5
                    else rng.choice(alive)
                )
                point = rng.choice(("now", "before_sync", "after_sync"))
                if point == "now":
                    self._crash(node)
                else:
                    node.crash_point = point  # strikes during its next Ready
        dead = [n for n in self.nodes.values() if not n.alive]
        if dead and r() < 0.03:
            self._start(rng.choice(dead))
        if sc.partition_rate and r() < sc.partition_rate:
            self._partition()
        if self.blocked and r() < sc.heal_rate:
            self.blocked.clear()
        if sc.transfer_rate and r() < sc.transfer_rate:
            leader = self._leader()
            if leader is not None:
                voters = [v for v in leader.core.conf_state.voters if v != leader.id]
                if voters:
                    leader.core.transfer_leadership(rng.choice(voters))
                    self.dirty.add(leader.id)
        if sc.membership and r() < sc.conf_rate:
            self._conf_change()

    def _partition(self) -> None:
        rng = self.rng
        ids = list(self.nodes)
        kind = rng.randrange(4)
        if kind == 0:  # isolate one node
            x = rng.choice(ids)
            for y in ids:
                if y != x:
                    self.blocked.add((x, y))
                    self.blocked.add((y, x))
        elif kind == 1:  # split in two
            rng.shuffle(ids)
            cut = rng.randrange(1, len(ids))
            for a in ids[:cut]:
                for b in ids[cut:]:
                    self.blocked.add((a, b))
                    self.blocked.add((b, a))
        elif kind == 2:  # one node can send but not receive (or the reverse)
            x = rng.choice(ids)
            inbound = rng.random() < 0.5
            for y in ids:
                if y != x:
                    self.blocked.add((y, x) if inbound else (x, y))
        else:  # a few random one-way links
            for _ in range(rng.randrange(1, 4)):
                a, b = rng.sample(ids, 2)
                self.blocked.add((a, b))

    def _conf_change(self) -> None:
        rng = self.rng
        leader = self._leader()
        if leader is None:
            return
        cs = leader.core.conf_state
        voters, learners = list(cs.voters), list(cs.learners)
        members = len(voters) + len(learners)
        choice = rng.randrange(4)
        cc: ConfChange | None = None
        new_node = False
        if choice == 0 and members < 6 and self.next_id <= 12:
            cc = ConfChange(rng.choice((ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER)), self.next_id)
            new_node = True
        elif choice == 1 and (len(voters) > 2 or learners):
            cc = ConfChange(
                ConfChangeType.REMOVE, rng.choice(voters + learners if len(voters) > 2 else learners)
            )
        elif choice == 2 and len(voters) > 2:
            cc = ConfChange(ConfChangeType.DEMOTE, rng.choice(voters))
        elif choice == 3 and learners:
            cc = ConfChange(ConfChangeType.ADD_VOTER, rng.choice(learners))
        if cc is None:
            return
        try:
            leader.core.propose_conf_change(cc)
        except Exception:
            self.dirty.add(leader.id)  # a self-removal may have started a transfer
            return
        self.dirty.add(leader.id)
        if new_node:
            self._add_node(self.next_id, None)
            self.next_id += 1

    # -- main loop -------------------------------------------------------------------------------------
    def step(self) -> None:
        sc = self.sc
        if self.faults:
            self._fault_step()
            self._client_step()
        bucket = self.net.pop(self.time, None)
        if bucket is not None:
            for m in bucket:
                self._deliver(m)
        te = sc.tick_every
        for node in self.nodes.values():
            if node.alive and (self.time + node.phase) % te == 0:
                node.core.tick()
                if self.faults and self.rng.random() < 0.02:  # clock drift: an occasional extra tick
                    node.core.tick()
                self.dirty.add(node.id)
        if self.dirty:
            dirty = sorted(self.dirty)
            self.dirty.clear()
            for nid in dirty:
                self._process(self.nodes[nid])
        self.time += 1

    def heal(self) -> None:
        """Stop injecting faults: reconnect everything and restart every crashed node."""
        self.faults = False
        self.blocked.clear()
        self.drop = 0.0
        self.dup = 0.0
        for n in self.nodes.values():
            n.crash_point = None
            if not n.alive:
                self._start(n)

    def check_liveness(self) -> None:
        """After healing, a leader must commit a fresh proposal within 10 election timeouts."""
        sc = self.sc
        budget = 10 * sc.election_ticks * sc.tick_every
        deadline = self.time + budget
        proposed: tuple[SimNode, int, int] | None = None  # node, its term, index
        data = b"live=ok"
        while self.time < deadline:
            leader = self._leader()
            if (
                leader is not None
                and leader.id in leader.core.conf_state.voters
                and (proposed is None or proposed[0] is not leader or proposed[1] != leader.core.term)
            ):
                try:
                    proposed = (leader, leader.core.term, leader.core.propose(data))
                    self.dirty.add(leader.id)
                except Exception:
                    proposed = None
            self.step()
            if proposed is not None:
                node, _, idx = proposed
                if node.applied >= idx and self.checker.applied.get(idx, (0, b""))[1] == data:
                    return
        raise Violation(
            f"liveness: no proposal committed within 10 election timeouts after healing (time {self.time})"
        )

    def run(self) -> None:
        for _ in range(self.sc.steps):
            self.step()
        self.heal()
        self.check_liveness()
        # let in-flight client ops finish so the history has fewer open ends
        for _ in range(4 * self.sc.election_ticks * self.sc.tick_every):
            self.step()
        res = check_history([op for op in self.history if id(op) not in self.failed])
        if not res.ok:
            raise Violation(f"not linearizable (key {res.key}): {res.explanation}")


def run_seed(seed: int, steps: int = 2000) -> Sim:
    sim = Sim(Scenario.from_seed(seed, steps))
    sim.run()
    return sim


def replay_command(seed: int) -> str:
    return REPLAY_CMD.format(seed=seed)


__all__ = ["Checker", "Disk", "Scenario", "Sim", "SimNode", "Violation", "replay_command", "run_seed"]
