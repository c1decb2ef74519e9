"""Deterministic simulation of the Raft core under faults (see ``harness.py``).

Default run: 50 cases x 10 seeds = 500 seeds of 2,000 steps each (xdist balances the cases);
``--soak``: 1,000 cases = 10,000 seeds; ``--seed N``: replay one seed (``-k replay``).
"""

from __future__ import annotations

import pytest

from agents.raft.core import RaftCore
from agents.raft.types import ConfChange, ConfChangeType, Message, MessageType, Role
from tests.sim.harness import Scenario, Sim, Violation, replay_command, run_seed

SEEDS_PER_CASE = 10
CASES = 50
SOAK_CASES = 1000
STEPS = 2000


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed_batch" in metafunc.fixturenames:
        n = SOAK_CASES if metafunc.config.getoption("soak") else CASES
        metafunc.parametrize(
            "seed_batch",
            range(n),
            ids=[f"seeds-{i * SEEDS_PER_CASE}-{(i + 1) * SEEDS_PER_CASE - 1}" for i in range(n)],
        )


def _run(seed: int) -> None:
    try:
        run_seed(seed, STEPS)
        return
    except Exception as e:  # a Violation, or the core raising where it must not
        error = f"{type(e).__name__}: {e}"
    pytest.fail(f"seed {seed}: {error}\nreplay: {replay_command(seed)}", pytrace=False)


def test_random_seeds(seed_batch: int) -> None:
    for seed in range(seed_batch * SEEDS_PER_CASE, (seed_batch + 1) * SEEDS_PER_CASE):
        _run(seed)


def test_replay(request: pytest.FixtureRequest) -> None:
    seed = request.config.getoption("--seed")
    if seed is None:
        pytest.skip("replays one seed: pass --seed N")
    sc = Scenario.from_seed(int(seed), STEPS)
    print(sc)  # visible with -s: what this seed exercises
    _run(int(seed))


# ------------------------------------------------------------------------------------------------------
# Scripted scenarios on the same harness


def _quiet(seed: int, nodes: int = 3) -> Sim:
    sc = Scenario.from_seed(seed)
    sc.nodes = nodes
    sc.crash_rate = sc.partition_rate = sc.transfer_rate = 0.0
    sc.drop = sc.dup = 0.0
    sc.membership = False
    sc.compact_every = 20
    return Sim(sc)


def _run_until(sim: Sim, cond: object, limit: int = 3000) -> None:
    assert callable(cond)
    for _ in range(limit):
        sim.step()
        if cond():
            return
    raise AssertionError("condition not reached")


def _conf_change(sim: Sim, cc: ConfChange) -> None:
    """Propose ``cc`` on the leader (retrying while another change is pending) and wait for it."""

    def applied() -> bool:
        leader = sim._leader()
        if leader is None:
            return False
        cs = leader.core.conf_state
        if cc.type == ConfChangeType.REMOVE:
            return cc.node_id not in cs.voters + cs.learners
        return cc.node_id in cs.voters and not cs.promoting

    for _ in range(200):
        leader = sim._leader()
        if leader is not None:
            try:
                leader.core.propose_conf_change(cc)
                sim.dirty.add(leader.id)
            except Exception:
                sim.dirty.add(leader.id)
        for _ in range(20):
            sim.step()
        if applied():
            return
    raise AssertionError(f"{cc} never took effect")


def test_rolling_replacement_of_every_member() -> None:
    sim = _quiet(101)
    sim.sc.drop = 0.02
    sim.drop = 0.02
    for _ in range(300):
        sim.step()
    for new, old in ((4, 1), (5, 2), (6, 3)):
        sim._add_node(new, None)
        sim.next_id = new + 1
        _conf_change(sim, ConfChange(ConfChangeType.ADD_VOTER, new))
        _conf_change(sim, ConfChange(ConfChangeType.REMOVE, old))
    leader = sim._leader()
    assert leader is not None and leader.core.conf_state.voters == (4, 5, 6)
    for nid in (1, 2, 3):
        sim._crash(sim.nodes[nid])  # the old members are gone for good
    sim.faults = False
    sim.check_liveness()


def test_force_new_cluster_recovers_from_losing_the_majority() -> None:
    sim = _quiet(202)
    for _ in range(600):
        sim.step()
    sim.faults = False
    for _ in range(100):
        sim.step()
    survivor = max(sim.nodes.values(), key=lambda n: n.core.status().commit)
    acknowledged = {
        op.key: op.value
        for op in sorted(sim.history, key=lambda o: o.ret or 0)
        if op.kind == "write" and op.ret is not None
    }
    for n in sim.nodes.values():
        sim._crash(n)
    # Only the survivor's disk is left: it restarts alone with --force-new-cluster.
    others = [nid for nid in sim.nodes if nid != survivor.id]
    for nid in others:
        del sim.nodes[nid]
    sim._start(survivor)
    survivor.core.force_new_cluster()
    sim.dirty.add(survivor.id)
    _run_until(sim, lambda: survivor.core.role == Role.LEADER)
    assert survivor.core.conf_state.voters == (survivor.id,)
    _run_until(sim, lambda: survivor.applied >= survivor.core.status().commit)
    for key, value in acknowledged.items():
        assert survivor.kv.get(key) is not None
        assert survivor.kv[key] == value or any(
            op.key == key and op.kind == "write" and op.value == survivor.kv[key] for op in sim.history
        )
    # The new one-node cluster grows again.
    sim._add_node(10, None)
    sim.next_id = 11
    _conf_change(sim, ConfChange(ConfChangeType.ADD_VOTER, 10))
    sim.check_liveness()


def test_harness_catches_a_vote_that_is_not_persisted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker is only worth something if it fails on a broken core (PySyncObj #84 class)."""
    orig = RaftCore._handle_vote_request

    def forgetful(self: RaftCore, m: Message) -> None:
        vote = self._vote
        orig(self, m)
        if m.type == MessageType.VOTE:
            self._vote = vote

    monkeypatch.setattr(RaftCore, "_handle_vote_request", forgetful)
    with pytest.raises(Violation):
        for seed in range(5):
            run_seed(seed, 500)


def test_harness_catches_reads_served_without_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    def eager(self: RaftCore, context: bytes, frm: int) -> None:
        self._respond_read(self._log.committed, context, frm)

    monkeypatch.setattr(RaftCore, "_read_request", eager)
    with pytest.raises(Violation):
        for seed in range(400):
            run_seed(seed, 1000)


def test_scenarios_are_deterministic() -> None:
    a, b = run_seed(7, 600), run_seed(7, 600)
    assert [(o.kind, o.key, o.value, o.call, o.ret) for o in a.history] == [
        (o.kind, o.key, o.value, o.call, o.ret) for o in b.history
    ]
    assert len(a.history) > 20
