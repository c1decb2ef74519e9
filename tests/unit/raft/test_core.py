"""Behaviour of the pure Raft core, one scripted scenario per property."""

from __future__ import annotations

import random

import pytest

from agents.raft.core import Config, RaftCore, decode_conf_change, encode_conf_change
from agents.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NotLeader,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.unit.raft.memnet import MemNet

ET = 5


def cluster(n: int = 3, **cfg: object) -> MemNet:
    net = MemNet(range(1, n + 1), 1, election_ticks=ET, **cfg)
    net.campaign(1)
    assert net.leader() == 1
    net.deliver()
    return net


def stepped_out(net: MemNet, nid: int) -> None:
    """Tick a node past any lease/election timeout without letting it campaign successfully."""
    net.tick(nid, 3 * ET)


# ------------------------------------------------------------------------------------------------------
# Election


def test_bootstrap_writes_membership_entries_and_elects_one_leader() -> None:
    net = MemNet([1, 2, 3], election_ticks=ET)
    first = net.readies[1][0]
    assert [e.index for e in first.entries] == [1, 2, 3]
    assert all(e.type == EntryType.CONF_CHANGE and e.term == 1 for e in first.entries)
    assert first.hard_state == HardState(1, 0, 3)
    net.campaign(2)
    assert net.leader() == 2
    for i in (1, 3):
        assert net.cores[i].role == Role.FOLLOWER and net.cores[i].leader == 2
    assert {c.term for c in net.cores.values()} == {2}


def test_randomized_timeout_comes_from_injected_rng() -> None:
    def first_campaign(seed: int) -> int:
        core = RaftCore(
            Config(id=1, election_ticks=10), random.Random(seed), conf=ConfState(voters=(1, 2, 3))
        )
        for t in range(1, 100):
            core.tick()
            if core.role != Role.FOLLOWER:
                return t
        raise AssertionError("never campaigned")

    ticks = {first_campaign(s) for s in range(30)}
    assert ticks <= set(range(10, 20)) and len(ticks) > 1
    assert first_campaign(7) == first_campaign(7)


def test_pre_vote_keeps_a_partitioned_node_from_disrupting() -> None:
    net = cluster()
    net.isolate(3)
    stepped_out(net, 3)
    assert net.cores[3].term == 2  # pre-votes do not raise the term
    assert net.cores[3].role == Role.PRE_CANDIDATE
    net.heal()
    net.tick(3, 3 * ET)  # campaigns again, now connected: the others are in their leader lease
    net.deliver()
    assert net.leader() == 1 and net.cores[1].term == 2


def test_without_pre_vote_a_partitioned_node_inflates_its_term() -> None:
    net = cluster(pre_vote=False)
    net.isolate(3)
    stepped_out(net, 3)
    assert net.cores[3].term > 2


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    net = cluster()
    net.isolate(1)
    net.tick(1, ET)  # the first check still counts the answers it got before the cut
    net.tick(1, ET)
    assert net.cores[1].role == Role.FOLLOWER
    assert net.cores[1].leader == 0


def test_vote_is_in_the_same_ready_as_the_grant_and_survives_restart() -> None:
    """PySyncObj #84/#201: the vote must be durable before the grant leaves; term never resets."""
    net = MemNet([1, 2, 3], election_ticks=ET)
    net.cut.add((2, 1))  # 2's answers are lost: 1 wins with 3's vote
    net.campaign(1)
    grants = [m for m in net.sent if m.type == MessageType.VOTE_RESP and m.frm == 2 and not m.reject]
    assert grants
    rd = next(r for r in net.readies[2] if any(m is grants[0] for m in r.messages))
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.hard_state.term == grants[0].term
    term = grants[0].term
    core = net.restart(2)
    assert core.term == term
    # Another candidate of the same term is refused after the restart.
    core.step(Message(MessageType.VOTE, 2, 3, term, log_term=1, index=3))
    rd = core.ready()
    resp = [m for m in rd.messages if m.type == MessageType.VOTE_RESP]
    assert resp and resp[0].reject


def test_torn_write_keeping_entries_but_not_hard_state_does_not_lower_the_term() -> None:
    entries = [Entry(1, 1), Entry(5, 2)]
    core = RaftCore(
        Config(id=1),
        random.Random(1),
        hard_state=HardState(3, 2, 1),
        entries=entries,
        conf=ConfState(voters=(1, 2, 3)),
    )
    assert core.term == 5
    assert core.ready().hard_state == HardState(5, 0, 1)


# ------------------------------------------------------------------------------------------------------
# Replication


def test_proposal_on_follower_raises_not_leader_with_leader_id() -> None:
    net = cluster()
    with pytest.raises(NotLeader) as exc:
        net.cores[2].propose(b"x")
    assert exc.value.leader == 1
    fresh = RaftCore(Config(id=9), random.Random(1))
    with pytest.raises(NotLeader) as exc2:
        fresh.propose(b"x")
    assert exc2.value.leader == 0


def test_replication_commits_and_applies_everywhere() -> None:
    net = cluster()
    idx = [net.cores[1].propose(f"v{i}".encode()) for i in range(10)]
    net.deliver()
    for i in (1, 2, 3):
        datas = [e.data for e in net.applied[i] if e.type == EntryType.NORMAL and e.data]
        assert datas == [f"v{i}".encode() for i in range(10)]
        assert net.cores[i].status().commit == idx[-1]


def test_batched_proposals_send_one_append_per_peer_per_ready() -> None:
    net = cluster()
    leader = net.cores[1]
    for i in range(50):
        leader.propose(b"x%d" % i)
    rd = leader.ready()
    appends = [m for m in rd.messages if m.type == MessageType.APPEND]
    assert sorted(m.to for m in appends) == [2, 3]
    assert all(len(m.entries) == 50 for m in appends)


def test_fast_backtracking_over_a_long_divergent_log() -> None:
    # Node 3 was a leader of term 2 and appended 200 entries nobody else has.
    conf = ConfState(voters=(1, 2, 3))
    base = [Entry(1, 1)]
    net = MemNet([], election_ticks=ET, max_entries_per_msg=500)
    net.ids = [1, 2, 3]
    for nid in (1, 2):
        net.add(
            nid, conf=conf, hard_state=HardState(3, 0, 1), entries=base + [Entry(3, i) for i in range(2, 50)]
        )
    net.add(3, conf=conf, hard_state=HardState(2, 0, 1), entries=base + [Entry(2, i) for i in range(2, 202)])
    net.campaign(1)
    assert net.leader() == 1
    net.deliver()

    def log_of(nid: int) -> list[tuple[int, int]]:
        return [(e.index, e.term) for e in net.cores[nid]._log.entries]

    assert log_of(3) == log_of(1) and len(log_of(1)) == 50
    rejects = [m for m in net.sent if m.type == MessageType.APPEND_RESP and m.frm == 3 and m.reject]
    assert 1 <= len(rejects) <= 3  # one term-sized jump, not one entry at a time


def test_figure8_leader_does_not_commit_old_term_entries_by_counting() -> None:
    """Raft paper Figure 8: an entry of term 2 on a majority is not committed by a term-4 leader."""
    conf = ConfState(voters=(1, 2, 3, 4, 5))
    net = MemNet([], election_ticks=ET, max_entries_per_msg=1)
    net.ids = [1, 2, 3, 4, 5]
    e1 = Entry(1, 1)
    net.add(1, conf=conf, hard_state=HardState(3, 0, 1), entries=[e1, Entry(2, 2)])
    net.add(2, conf=conf, hard_state=HardState(2, 0, 1), entries=[e1, Entry(2, 2)])
    net.add(3, conf=conf, hard_state=HardState(3, 0, 1), entries=[e1])
    net.add(4, conf=conf, hard_state=HardState(3, 0, 1), entries=[e1])
    net.add(5, conf=conf, hard_state=HardState(3, 5, 1), entries=[e1, Entry(3, 2)])

    net.cut.update({(1, 4), (1, 5)})
    for _ in range(4 * ET):
        net.cores[1].tick()
        if net.cores[1].role != Role.FOLLOWER:
            break
    # Votes from 2 and 3 (5's log is more up to date than 1's; 4 is cut off); appends are held back.
    net.deliver(keep=lambda m: m.type not in (MessageType.APPEND, MessageType.APPEND_RESP))
    leader = net.cores[1]
    assert leader.role == Role.LEADER and leader.term == 4
    # 2 and 3 acknowledge index 2 (the term-2 entry): a majority of 5 stores it ...
    for frm in (2, 3):
        leader.step(Message(MessageType.APPEND_RESP, 1, frm, 4, index=2))
    assert leader.status().commit == 1  # ... but it is from an older term: not committed by counting
    for frm in (2, 3):
        leader.step(Message(MessageType.APPEND_RESP, 1, frm, 4, index=3))
    assert leader.status().commit == 3  # the term-4 no-op commits, and index 2 with it


# ------------------------------------------------------------------------------------------------------
# Snapshots


def test_lagging_follower_gets_a_snapshot_and_catches_up() -> None:
    net = cluster()
    net.down.add(3)
    for i in range(20):
        net.cores[1].propose(b"v%d" % i)
    net.deliver()
    leader = net.cores[1]
    applied = leader.status().applied
    leader.compact(applied, b"SNAPDATA")
    net.process(1)
    assert net.stored[1].snap is not None and net.stored[1].snap.meta.index == applied
    assert leader.status().first_index == applied + 1
    net.down.discard(3)
    net.tick_all(2)
    net.deliver()
    snaps = net.types_sent(MessageType.SNAPSHOT)
    assert snaps and snaps[0].to == 3
    assert any(r.snapshot is not None and r.snapshot.data == b"SNAPDATA" for r in net.readies[3])
    net.cores[1].report_snapshot(3, True)
    net.propose(1, b"after")
    net.tick_all(2)
    assert net.cores[3].status().commit == net.cores[1].status().commit
    assert net.applied[3][-1].data == b"after"
    assert net.cores[1].status().progress[3].state == "replicate"


def test_compaction_keeps_membership_in_the_snapshot() -> None:
    net = cluster()
    net.propose(1, b"x")
    core = net.cores[1]
    core.compact(core.status().applied, b"s")
    rd = core.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.conf.voters == (1, 2, 3)


# ------------------------------------------------------------------------------------------------------
# Membership


def test_new_voter_joins_as_learner_and_is_promoted_only_after_catching_up() -> None:
    net = cluster(promote_lag=2)
    for i in range(30):
        net.cores[1].propose(b"v%d" % i)
    net.deliver()
    net.add(4)  # joining member: no conf, empty log
    net.down.add(4)
    net.cores[1].propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4, b"addr"))
    net.deliver()
    cs = net.cores[1].conf_state
    assert 4 in cs.learners and 4 in cs.promoting and 4 not in cs.voters
    net.tick_all(3 * ET)
    assert 4 not in net.cores[1].conf_state.voters  # unreachable: never promoted
    net.down.discard(4)
    net.tick_all(3)
    cs = net.cores[1].conf_state
    assert 4 in cs.voters and not cs.promoting
    assert net.cores[4].conf_state.voters == (1, 2, 3, 4)
    assert net.cores[4].role == Role.FOLLOWER
    idx = net.propose(1, b"with4")
    assert net.cores[4].status().commit >= idx


def test_one_conf_change_at_a_time() -> None:
    net = cluster()
    net.cores[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        net.cores[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.deliver()
    net.cores[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.deliver()
    assert net.cores[1].conf_state.learners == (4, 5)


def test_remove_and_demote_followers() -> None:
    net = cluster(5)
    net.cores[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE, 5))
    net.deliver()
    net.cores[1].propose_conf_change(ConfChange(ConfChangeType.DEMOTE, 4))
    net.deliver()
    cs = net.cores[1].conf_state
    assert cs.voters == (1, 2, 3) and cs.learners == (4,)
    assert net.cores[4].role == Role.LEARNER
    net.tick(4, 4 * ET)
    assert net.cores[4].role == Role.LEARNER  # learners never campaign


def test_removing_the_leader_transfers_leadership_first() -> None:
    net = cluster()
    net.propose(1, b"x")
    with pytest.raises(ProposalDropped):
        net.cores[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    assert net.cores[1].conf_state.voters == (1, 2, 3)  # nothing was appended
    net.process(1)
    assert [m.to for m in net.types_sent(MessageType.TIMEOUT_NOW)] in ([2], [3])
    net.deliver()
    new = net.leader()
    assert new in (2, 3)
    net.cores[new].tick()  # lets the new leader's no-op commit
    net.deliver()
    net.cores[new].propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    net.deliver()
    assert net.cores[new].conf_state.voters == tuple(sorted({2, 3}))


def test_conf_change_encoding_round_trips() -> None:
    cc = ConfChange(ConfChangeType.ADD_VOTER, 7, b"10.0.0.7:4242")
    assert decode_conf_change(encode_conf_change(cc)) == cc
    assert encode_conf_change(cc) == encode_conf_change(cc)
    with pytest.raises(ValueError):
        decode_conf_change(b"junk")


# ------------------------------------------------------------------------------------------------------
# Leadership transfer, reads


def test_leadership_transfer_to_a_lagging_follower() -> None:
    net = cluster()
    net.down.add(3)
    for i in range(5):
        net.cores[1].propose(b"v%d" % i)
    net.deliver()
    net.down.discard(3)
    net.cores[1].transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        net.cores[1].propose(b"during")
    net.tick_all(2)
    assert net.leader() == 3
    assert net.cores[3].term == 3


def test_leadership_transfer_aborts_after_an_election_timeout() -> None:
    net = cluster()
    net.isolate(3)
    net.cut.discard((1, 2))
    net.cut.discard((2, 1))
    net.cores[1].transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        net.cores[1].propose(b"x")
    net.tick(1, ET)
    net.deliver()
    assert net.leader() == 1
    net.cores[1].propose(b"x")  # accepted again


def test_transfer_requested_on_a_follower_is_forwarded() -> None:
    net = cluster()
    net.cores[2].transfer_leadership(3)
    net.deliver()
    assert net.leader() == 3


def test_read_index_on_leader_needs_a_heartbeat_round() -> None:
    net = cluster()
    idx = net.propose(1, b"x")
    leader = net.cores[1]
    leader.read_index(b"r1")
    rd = leader.ready()
    assert rd.read_states == []
    assert {m.to for m in rd.messages if m.type == MessageType.HEARTBEAT} == {2, 3}
    for m in rd.messages:
        net.cores[m.to].step(m)
    for i in (2, 3):
        for m in net.cores[i].ready().messages:
            leader.step(m)
    rd = leader.ready()
    assert [(r.index, r.context) for r in rd.read_states] == [(idx, b"r1")]


def test_read_index_on_follower_is_forwarded() -> None:
    net = cluster()
    idx = net.propose(1, b"x")
    net.cores[3].read_index(b"r3")
    net.deliver()
    states = [rs for rd in net.readies[3] for rs in rd.read_states]
    assert [(r.index, r.context) for r in states] == [(idx, b"r3")]


def test_read_index_waits_for_the_new_leader_to_commit_in_its_term() -> None:
    core = RaftCore(Config(id=1, election_ticks=ET), random.Random(1), conf=ConfState(voters=(1, 2, 3)))
    core.ready()
    for _ in range(4 * ET):
        core.tick()
    assert core.role == Role.PRE_CANDIDATE
    for frm in (2, 3):
        core.step(Message(MessageType.PRE_VOTE_RESP, 1, frm, core.term + 1))
    for frm in (2, 3):
        core.step(Message(MessageType.VOTE_RESP, 1, frm, core.term))
    assert core.role == Role.LEADER
    core.read_index(b"r")
    rd = core.ready()
    assert rd.read_states == [] and not any(m.type == MessageType.HEARTBEAT for m in rd.messages)
    core.advance(rd)
    last = core.status().last_index
    for frm in (2, 3):  # the no-op of the new term commits ...
        core.step(Message(MessageType.APPEND_RESP, 1, frm, core.term, index=last))
    rd = core.ready()
    beats = [m for m in rd.messages if m.type == MessageType.HEARTBEAT]
    assert beats and rd.read_states == []  # ... then the read's heartbeat round starts
    for m in beats:
        core.step(Message(MessageType.HEARTBEAT_RESP, 1, m.to, core.term, context=m.context))
    assert [(r.index, r.context) for r in core.ready().read_states] == [(last, b"r")]


def test_read_index_without_known_leader_raises() -> None:
    core = RaftCore(Config(id=1), random.Random(1), conf=ConfState(voters=(1, 2, 3)))
    with pytest.raises(NotLeader):
        core.read_index(b"r")


def test_single_node_reads_and_writes() -> None:
    net = MemNet([1], election_ticks=ET)
    net.campaign(1)
    assert net.leader() == 1
    idx = net.propose(1, b"solo")
    net.cores[1].read_index(b"r")
    net.process(1)
    states = [rs for rd in net.readies[1] for rs in rd.read_states]
    assert states[0].index == idx


# ------------------------------------------------------------------------------------------------------
# Recovery


def test_force_new_cluster_keeps_committed_and_drops_uncommitted() -> None:
    net = cluster()
    committed = net.propose(1, b"committed")
    net.isolate(1)
    tail = net.cores[1].propose(b"uncommitted")
    net.process(1)
    assert tail > committed
    core = net.restart(1)
    core.force_new_cluster()
    net.process(1)
    assert net.cores[1].conf_state.voters == (1,)
    assert net.cores[1].conf_state.learners == ()
    datas = [e.data for e in net.stored[1].entries]
    assert b"committed" in datas and b"uncommitted" not in datas
    assert net.stored[1].hs.commit == net.cores[1].status().last_index
    net.tick(1, 3 * ET)
    assert net.cores[1].role == Role.LEADER
    idx = net.cores[1].propose(b"alone")
    net.process(1)
    assert net.cores[1].status().commit == idx
    # and it restarts into the same single-node configuration
    again = net.restart(1)
    assert again.conf_state.voters == (1,)


def test_restart_from_snapshot_and_log() -> None:
    net = cluster()
    for i in range(5):
        net.propose(1, b"v%d" % i)
    core = net.cores[2]
    core.compact(core.status().applied - 2, b"snap")
    net.process(2)
    net.propose(1, b"after")
    term = net.cores[2].term
    again = net.restart(2)
    st = again.status()
    assert again.term == term and st.first_index == net.stored[2].snap.meta.index + 1  # type: ignore[union-attr]
    assert again.conf_state.voters == (1, 2, 3)
    rd = again.ready()
    assert rd.committed and rd.committed[-1].data == b"after"


def test_restart_rejects_a_log_with_gaps() -> None:
    snap = Snapshot(SnapshotMeta(10, 2, ConfState(voters=(1,))), b"")
    with pytest.raises(ValueError):
        RaftCore(Config(id=1), random.Random(1), snapshot=snap, entries=[Entry(2, 12)])


# ------------------------------------------------------------------------------------------------------
# Robustness


def test_step_never_raises_on_junk() -> None:
    net = cluster()
    rng = random.Random(42)
    ents = [Entry(2, 5), Entry(2, 6, EntryType.CONF_CHANGE, b"\x01\x00\x07"), Entry(9, 7)]
    snap = Snapshot(SnapshotMeta(3, 1, ConfState()), b"")
    for _ in range(5000):
        to = rng.choice((1, 2, 3, 4))
        m = Message(
            type=MessageType(rng.randrange(len(MessageType))),
            to=to,
            frm=rng.choice((0, 1, 2, 3, 99)),
            term=rng.randrange(-1, 6),
            log_term=rng.randrange(-1, 4),
            index=rng.randrange(-1, 12),
            entries=tuple(rng.sample(ents, rng.randrange(0, 3))),
            commit=rng.randrange(-1, 12),
            reject=rng.random() < 0.5,
            reject_hint=rng.randrange(-1, 12),
            snapshot=snap if rng.random() < 0.3 else None,
            context=rng.choice((b"", b"transfer", b"\x00" * 8, b"\xff" * 8)),
        )
        if to in net.cores:
            net.cores[to].step(m)
            net.process(to)
    # still a working cluster afterwards
    net.queue.clear()
    net.tick_all(4 * ET)
    leader = net.leader()
    assert leader
    net.propose(leader, b"ok")


def test_stale_and_duplicate_appends_are_harmless() -> None:
    net = cluster()
    net.propose(1, b"a")
    appends = [m for m in net.sent if m.type == MessageType.APPEND and m.to == 2]
    for m in appends + appends:
        net.cores[2].step(m)
    net.deliver()
    datas = [e.data for e in net.stored[2].entries if e.data]
    assert datas.count(b"a") == 1


def test_uncommitted_entries_are_bounded() -> None:
    net = cluster(max_uncommitted_entries=10)
    net.isolate(1)
    for i in range(10):
        net.cores[1].propose(b"%d" % i)
    with pytest.raises(ProposalDropped):
        net.cores[1].propose(b"one too many")


def test_heartbeat_carries_commit_no_higher_than_the_followers_match() -> None:
    net = cluster()
    net.down.add(3)
    idx = net.propose(1, b"x")
    net.cores[1].tick()
    rd = net.cores[1].ready()
    beats = {m.to: m.commit for m in rd.messages if m.type == MessageType.HEARTBEAT}
    assert beats[2] == idx
    assert beats[3] < idx
