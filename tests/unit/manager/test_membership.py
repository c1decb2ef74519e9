"""Managers in one process over real Raft and mutual TLS on loopback addresses (127.x.y.z).

init, join with tokens, leader failover, quorum loss and its recovery, token rotation, the backup and
restore flow (`--force-new-cluster`), and encryption at rest.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.manager.errors import InvalidArgument, ManagerError, NoLeader, NotLeader
from agents.manager.membership import cluster_of
from agents.manager.tokens import JoinTokens
from agents.state.objects import Network, Node, Secret, SecretSpec
from agents.swarmnode import SwarmNode, SwarmTiming
from tests.unit.agent.fakeexec import FakeExecutor

TIMING = SwarmTiming(tick_interval=0.05, election_ticks=10, heartbeat_period_s=0.2)


def _net() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def eventually(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.net = _net()
        self.nodes: dict[str, SwarmNode] = {}

    def ip(self, i: int) -> str:
        return f"{self.net}.{i}"

    def node(self, name: str, state_dir: Path | None = None) -> SwarmNode:
        # In-process nodes share the test's network namespace: no task networking, no mesh, no real tasks.
        n = SwarmNode(state_dir or self.root / name, name, timing=TIMING, fsync=False,
                      executor_factory=lambda _d: FakeExecutor(), network_plane=False)
        self.nodes[name] = n
        return n

    async def close(self) -> None:
        for n in self.nodes.values():
            await n.stop()

    def leader(self) -> SwarmNode | None:
        for n in self.nodes.values():
            if n.manager is not None and n.manager.is_leader:
                return n
        return None


async def _commit_secret(node: SwarmNode, name: str, data: bytes) -> None:
    assert node.manager is not None
    with node.manager.store.batch() as tx:
        tx.create(Secret(id=name + "x" * (25 - len(name)), spec=SecretSpec(name=name, data=data)))
    assert tx.changeset is not None
    result = await node.manager.commit(tx.changeset)
    assert result.ok, result.error


def test_init_join_failover_quorum_restore(tmp_path: Path) -> None:
    async def main() -> None:
        lab = Lab(tmp_path)
        try:
            m1 = lab.node("manager1")
            node_id = await m1.init(lab.ip(1))
            assert m1.ping_status() == "active/manager"
            assert m1.manager is not None and m1.manager.is_leader
            store = m1.manager.store
            cluster = cluster_of(store)
            assert cluster.root_ca.join_tokens.worker.startswith("SWMTKN-1-")
            me = store.get(Node, node_id)
            assert me is not None and me.manager_status is not None and me.manager_status.leader
            assert [n.spec.name for n in store.list(Network) if n.spec.ingress] == ["ingress"]

            # Joining: two managers and a worker; a wrong token is refused and nothing joins.
            bad = lab.node("intruder")
            with pytest.raises(InvalidArgument, match="A valid join token is necessary to join this cluster"):
                await bad.join(cluster.root_ca.join_tokens.worker[:-3] + "zzz", lab.ip(1), lab.ip(9))
            assert bad.state is None
            m2, m3, w1 = lab.node("manager2"), lab.node("manager3"), lab.node("worker1")
            await m2.join(cluster.root_ca.join_tokens.manager, f"{lab.ip(1)}:2377", lab.ip(2))
            await m3.join(cluster.root_ca.join_tokens.manager, lab.ip(1), lab.ip(3))
            await w1.join(cluster.root_ca.join_tokens.worker, lab.ip(1), lab.ip(4))
            assert w1.ping_status() == "active/worker" and w1.manager is None
            await eventually(lambda: len(m1.manager.raft.raft_status().voters) == 3)  # type: ignore[union-attr]
            await eventually(lambda: len(store.list(Node)) == 4)
            roles = sorted(n.role.value for n in store.list(Node))
            assert roles == ["manager", "manager", "manager", "worker"]
            # Every node (managers too) holds a dispatcher session with the leader and reports Ready.
            await eventually(lambda: all(n.status.state.value == "ready" for n in store.list(Node)))
            # Every manager applied the same state.
            for m in (m2, m3):
                await eventually(lambda m=m: m.manager is not None and len(m.manager.store.list(Node)) == 4)
            assert m2.info()["Managers"] == 3 and m2.info()["Nodes"] == 4

            # A secret never appears in plaintext under a manager's state dir.
            await _commit_secret(m1, "dbpass", b"correct-horse-battery-staple")
            await eventually(lambda: m3.manager is not None and bool(m3.manager.store.list(Secret)))
            for d in (tmp_path / "manager1", tmp_path / "manager3"):
                for f in d.rglob("*"):
                    if f.is_file():
                        assert b"correct-horse-battery-staple" not in f.read_bytes(), f

            # Leader failover: stop the leader; a survivor leads and accepts a write.
            await m1.stop()
            await eventually(lambda: lab.leader() not in (None, m1))
            new_leader = lab.leader()
            assert new_leader is not None
            await _commit_secret(new_leader, "after-failover", b"x")

            # Quorum loss: only one of three managers left; writes fail with Docker's message.
            survivor = m3 if new_leader is m2 else m2
            await new_leader.stop()
            assert survivor.manager is not None
            with pytest.raises(NoLeader, match="The swarm does not have a leader"):
                await _write_until_refused(survivor)
            # Restoring quorum heals the cluster without operator action.
            revived = lab.node(new_leader.hostname, tmp_path / new_leader.hostname)
            await revived.start()
            await eventually(lambda: lab.leader() is not None, timeout=20)
            leader = lab.leader()
            assert leader is not None
            await _commit_secret(leader, "healed", b"y")

            # Token rotation: the old worker token is refused afterwards.
            assert leader.manager is not None
            old = cluster_of(leader.manager.store)
            rotated = old.copy()
            tokens = JoinTokens(worker=old.root_ca.join_tokens.worker, manager=old.root_ca.join_tokens.manager)
            fresh = tokens.rotate(old.root_ca.ca_cert_pem, worker=True)
            rotated.root_ca.join_tokens.worker = fresh.worker
            with leader.manager.store.batch() as tx:
                tx.update(rotated)
            assert tx.changeset is not None
            assert (await leader.manager.commit(tx.changeset)).ok
            late = lab.node("worker2")
            with pytest.raises(InvalidArgument):
                await late.join(old.root_ca.join_tokens.worker, leader.state.advertise_ip, lab.ip(5))  # type: ignore[union-attr]
            await late.join(fresh.worker, leader.state.advertise_ip, lab.ip(5))  # type: ignore[union-attr]
            assert late.state is not None and late.state.role == "worker"

            # Backup and restore: copy a stopped manager's state dir, start it as a new one-manager cluster.
            await leader.stop()
            backup = tmp_path / "backup"
            shutil.copytree(tmp_path / leader.hostname, backup)
            await lab.close()
            restored = lab.node("restored", backup)
            await restored.start()
            await restored.init(lab.ip(7), force_new_cluster=True)
            assert restored.manager is not None and restored.manager.is_leader
            assert {s.spec.name for s in restored.manager.store.list(Secret)} >= {"dbpass", "after-failover", "healed"}
            assert restored.manager.raft.raft_status().voters == (restored.state.raft_id,)  # type: ignore[union-attr]
            await _commit_secret(restored, "restored-write", b"z")
        finally:
            await lab.close()

    run(main())


async def _write_until_refused(node: SwarmNode) -> None:
    """Keep writing through `node` until it refuses with NoLeader (re-raised for pytest.raises).

    Right after the leader dies a follower still names it (NotLeader); once its election timeout passes
    without a quorum it knows there is no leader.
    """
    for i in range(200):
        try:
            assert node.manager is not None
            await _commit_secret(node, f"w{i}", b"q")
        except NotLeader:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("writes kept succeeding without quorum")


def test_leave_rules(tmp_path: Path) -> None:
    async def main() -> None:
        lab = Lab(tmp_path)
        try:
            m1 = lab.node("manager1")
            with pytest.raises(ManagerError, match="not part of a swarm"):
                await m1.leave(force=False)
            await m1.init(lab.ip(1))
            with pytest.raises(ManagerError, match="Removing the last manager erases all current state"):
                await m1.leave(force=False)
            with pytest.raises(ManagerError, match="already part of a swarm"):
                await m1.init(lab.ip(1))
            assert m1.manager is not None
            cluster = cluster_of(m1.manager.store)
            w1 = lab.node("worker1")
            await w1.join(cluster.root_ca.join_tokens.worker, lab.ip(1), lab.ip(2))
            await w1.leave(force=False)
            assert w1.state is None and not (tmp_path / "worker1" / "swarm").exists()
            await m1.leave(force=True)
            assert m1.state is None and m1.ping_status() == "inactive" and m1.manager is None
            assert not (tmp_path / "manager1" / "swarm").exists()
        finally:
            await lab.close()

    run(main())


async def _set_role(node: SwarmNode, target_id: str, role: str) -> None:
    """What `docker node promote/demote` records: the desired role only."""
    from agents.state.objects import NodeRole

    assert node.manager is not None
    current = node.manager.store.get(Node, target_id)
    assert current is not None
    updated = current.copy()
    updated.spec.role = NodeRole(role)
    with node.manager.store.batch() as tx:
        tx.update(updated)
    assert tx.changeset is not None
    assert (await node.manager.commit(tx.changeset)).ok


def test_promote_demote_and_demoting_the_leader(tmp_path: Path) -> None:
    async def main() -> None:
        lab = Lab(tmp_path)
        try:
            m1 = lab.node("manager1")
            await m1.init(lab.ip(1))
            assert m1.manager is not None
            tokens = cluster_of(m1.manager.store).root_ca.join_tokens
            m2, w1 = lab.node("manager2"), lab.node("worker1")
            await m2.join(tokens.manager, lab.ip(1), lab.ip(2))
            await w1.join(tokens.worker, lab.ip(1), lab.ip(3))
            store = m1.manager.store

            # promote: the worker becomes a Raft voter and runs a manager.
            assert w1.state is not None
            await _set_role(m1, w1.state.node_id, "manager")
            await eventually(lambda: w1.manager is not None and w1.state is not None and w1.state.role == "manager")
            await eventually(lambda: len(m1.manager.raft.raft_status().voters) == 3)  # type: ignore[union-attr]
            await eventually(lambda: store.get(Node, w1.state.node_id).role.value == "manager")  # type: ignore[union-attr]

            # demote a follower: it leaves Raft and becomes a worker.
            assert m2.state is not None
            await _set_role(m1, m2.state.node_id, "worker")
            await eventually(lambda: m2.state is not None and m2.state.role == "worker" and m2.manager is None)
            await eventually(lambda: len(m1.manager.raft.raft_status().voters) == 2)  # type: ignore[union-attr]

            # demote the leader: leadership moves to the other manager first, then the old leader leaves.
            await _set_role(m1, m1.state.node_id, "worker")  # type: ignore[union-attr]
            await eventually(lambda: w1.manager is not None and w1.manager.is_leader, timeout=20)
            await eventually(lambda: m1.state is not None and m1.state.role == "worker", timeout=20)
            assert w1.manager is not None
            await eventually(lambda: w1.manager.raft.raft_status().voters == (w1.state.raft_id,))  # type: ignore[union-attr]
            await eventually(lambda: {n.description.hostname: n.role.value for n in w1.manager.store.list(Node)}  # type: ignore[union-attr]
                             == {"manager1": "worker", "manager2": "worker", "worker1": "manager"})
        finally:
            await lab.close()

    run(main())


def test_restarted_manager_still_reaches_the_first_manager(tmp_path: Path) -> None:
    """The first manager's Raft address is not in the log (it bootstrapped the cluster): a manager that
    restarts must remember it, or it can never answer the first manager again (regression)."""

    async def main() -> None:
        lab = Lab(tmp_path)
        try:
            m1 = lab.node("manager1")
            await m1.init(lab.ip(1))
            assert m1.manager is not None
            token = cluster_of(m1.manager.store).root_ca.join_tokens.manager
            m2, m3 = lab.node("manager2"), lab.node("manager3")
            await m2.join(token, lab.ip(1), lab.ip(2))
            await m3.join(token, lab.ip(1), lab.ip(3))
            await eventually(lambda: len(m1.manager.raft.raft_status().voters) == 3)  # type: ignore[union-attr]
            await m2.stop()
            m2 = lab.node("manager2", tmp_path / "manager2")
            await m2.start()
            await m3.stop()  # now m1 and m2 must form the quorum together
            await eventually(lambda: lab.leader() is not None, timeout=20)
            leader = lab.leader()
            assert leader is not None
            await _commit_secret(leader, "two-of-three", b"ok")
        finally:
            await lab.close()

    run(main())


def test_certificates_are_renewed_in_place(tmp_path: Path) -> None:
    """A node renews its certificate before expiry and keeps working: session, Raft, writes."""
    from agents.manager import ca

    async def main() -> None:
        lab = Lab(tmp_path)
        try:
            m1 = lab.node("manager1")
            await m1.init(lab.ip(1))
            assert m1.manager is not None
            tokens = cluster_of(m1.manager.store).root_ca.join_tokens
            m2, w1 = lab.node("manager2"), lab.node("worker1")
            await m2.join(tokens.manager, lab.ip(1), lab.ip(2))
            await w1.join(tokens.worker, lab.ip(1), lab.ip(3))
            before = {n: ca.NodeCredentials.load(tmp_path / n).cert.serial_number for n in ("manager2", "worker1")}
            m2._renew_at = w1._renew_at = 0.0  # "half the lifetime has passed"
            await eventually(lambda: all(
                ca.NodeCredentials.load(tmp_path / n).cert.serial_number != before[n] for n in before), timeout=20)
            store = m1.manager.store
            await eventually(lambda: all(n.status.state.value == "ready" for n in store.list(Node)), timeout=20)
            await eventually(lambda: m2.manager is not None and m2.manager.raft.leader != 0, timeout=20)
            await _commit_secret(m1, "after-renewal", b"ok")
            await eventually(lambda: m2.manager is not None and any(
                s.spec.name == "after-renewal" for s in m2.manager.store.list(Secret)))
        finally:
            await lab.close()

    run(main())
