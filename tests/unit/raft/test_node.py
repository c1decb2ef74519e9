"""RaftNode end to end in one process: 3 members over real mutual-TLS transports on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.raft.devcerts import CA, issue, make_cluster_certs
from agents.raft.kv import KVStateMachine
from agents.raft.kvcluster import free_ports
from agents.raft.node import NodeConfig, RaftNode
from agents.raft.types import NotLeader

pytestmark = pytest.mark.timeout(120)

FAST = {"tick_interval": 0.02, "election_ticks": 10}  # elections in 0.2-0.4 s keep the test quick


async def until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Cluster:
    def __init__(self, tmp: Path, ids: tuple[int, ...] = (1, 2, 3)) -> None:
        from agents.raft.tlsconfig import client_context, server_context

        self.tmp = tmp
        self.ids = ids
        certs = make_cluster_certs(tmp / "tls", ids)
        self.ssl = {
            i: (server_context(c.cert, c.key, c.ca), client_context(c.cert, c.key, c.ca))
            for i, c in certs.items()
        }
        self.addrs = {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(len(ids)), strict=True)}
        self.nodes: dict[int, RaftNode] = {}
        self.sms: dict[int, KVStateMachine] = {}

    def config(self, nid: int, **kw: object) -> NodeConfig:
        opts: dict[str, object] = {**FAST, **kw}
        return NodeConfig(
            id=nid,
            data_dir=self.tmp / f"data-{nid}",
            listen=self.addrs[nid],
            peers=dict(self.addrs),
            server_ssl=self.ssl[nid][0],
            client_ssl=self.ssl[nid][1],
            seed=nid,
            **opts,  # type: ignore[arg-type]
        )

    async def start(self, nid: int, cfg: NodeConfig | None = None) -> RaftNode:
        sm = KVStateMachine()
        node = RaftNode(cfg or self.config(nid), sm)
        await node.start()
        self.nodes[nid], self.sms[nid] = node, sm
        return node

    async def start_all(self) -> None:
        for nid in self.ids:
            await self.start(nid)

    async def stop_all(self) -> None:
        for node in self.nodes.values():
            await node.stop()
        self.nodes.clear()

    async def leader(self, timeout: float = 10.0) -> RaftNode:
        def one() -> bool:
            leaders = [n for n in self.nodes.values() if n.is_leader]
            return len(leaders) == 1 and all(n.leader == leaders[0].id for n in self.nodes.values())

        await until(one, timeout, "a leader all members agree on")
        return next(n for n in self.nodes.values() if n.is_leader)


def put(key: bytes, value: bytes) -> bytes:
    return KVStateMachine.encode_put(key, value)


def test_elect_propose_apply_everywhere_and_follower_redirect(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            await c.start_all()
            leader = await c.leader()
            results = await asyncio.gather(
                *(leader.propose(put(b"k%d" % i, b"v%d" % i), 10) for i in range(50))
            )
            assert len(set(results)) == 50  # the KV returns the entry index: all distinct
            await until(lambda: all(len(sm.data) == 50 for sm in c.sms.values()), what="apply everywhere")
            assert all(sm.data[b"k7"] == b"v7" for sm in c.sms.values())

            follower = next(n for n in c.nodes.values() if not n.is_leader)
            with pytest.raises(NotLeader) as ei:
                await follower.propose(put(b"x", b"y"))
            assert ei.value.leader == leader.id

            await follower.read_index(timeout=5)  # linearizable barrier on a follower
            assert c.sms[follower.id].data[b"k49"] == b"v49"
            st = leader.status()
            assert st["role"] == "leader" and st["applied"] >= st["commit"] - 1
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_restart_from_disk_keeps_data(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            await c.start_all()
            leader = await c.leader()
            for i in range(20):
                await leader.propose(put(b"k%d" % i, b"v%d" % i), 10)
            await c.stop_all()

            await c.start_all()
            leader = await c.leader()
            await leader.propose(put(b"after", b"restart"), 10)
            await until(lambda: all(len(sm.data) == 21 for sm in c.sms.values()), what="replay + new entry")
            assert all(sm.data[b"k19"] == b"v19" for sm in c.sms.values())
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_restart_with_snapshots_keeps_data(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            for nid in c.ids:
                await c.start(nid, c.config(nid, snapshot_every=7))
            leader = await c.leader()
            await asyncio.gather(*(leader.propose(put(b"k%d" % i, b"v"), 10) for i in range(30)))
            await until(lambda: all(len(sm.data) == 30 for sm in c.sms.values()), what="apply everywhere")
            assert leader.status()["snapshot_index"] >= 7
            await c.stop_all()
            for nid in c.ids:
                await c.start(nid, c.config(nid, snapshot_every=7))
            await c.leader()
            await until(lambda: all(len(sm.data) == 30 for sm in c.sms.values()), what="restore + replay")
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_force_new_cluster_from_copied_data_dir(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            await c.start_all()
            leader = await c.leader()
            for i in range(10):
                await leader.propose(put(b"k%d" % i, b"v%d" % i), 10)
            await until(lambda: all(len(sm.data) == 10 for sm in c.sms.values()), what="apply everywhere")
            await c.stop_all()
        finally:
            await c.stop_all()

        # "restore a backup": copy member 2's directory somewhere else and start it as a new 1-member cluster
        restored_dir = tmp_path / "restored"
        shutil.copytree(tmp_path / "data-2", restored_dir)
        (addr,) = (("127.0.0.1", p) for p in free_ports(1))
        cfg = c.config(2, force_new_cluster=True)
        cfg = NodeConfig(**{**cfg.__dict__, "data_dir": restored_dir, "listen": addr, "peers": {2: addr}})
        sm = KVStateMachine()
        node = RaftNode(cfg, sm)
        await node.start()
        try:
            await until(lambda: node.is_leader, 10, "the lone member to lead")
            await node.read_index(5)
            assert len(sm.data) == 10 and sm.data[b"k9"] == b"v9"
            await node.propose(put(b"new", b"cluster"), 10)
            assert sm.data[b"new"] == b"cluster"
            assert node.status()["voters"] == [2]
        finally:
            await node.stop()

    asyncio.run(main())


def test_lagging_follower_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            for nid in c.ids:
                await c.start(nid, c.config(nid, snapshot_every=5))
            leader = await c.leader()
            lagging = next(n for n in c.ids if n != leader.id)
            await c.nodes.pop(lagging).stop()
            await asyncio.gather(*(leader.propose(put(b"k%d" % i, b"v%d" % i), 10) for i in range(40)))
            assert leader.status()["first_index"] > 5  # the entries the lagging member misses are gone
            node = await c.start(lagging, c.config(lagging, snapshot_every=5))
            await until(lambda: len(c.sms[lagging].data) == 40, what="catch up through a snapshot")
            assert node.status()["snapshot_index"] > 0
            assert node.addresses == c.addrs  # member addresses travel inside the snapshot
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_transfer_leadership(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            await c.start_all()
            leader = await c.leader()
            await leader.propose(put(b"a", b"1"), 10)
            target = next(n for n in c.ids if n != leader.id)
            await leader.transfer_leadership(target, timeout=5)
            new = await c.leader()
            assert new.id == target
            await new.propose(put(b"b", b"2"), 10)
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_add_and_remove_member(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, ids=(1, 2, 3))
        (port4,) = free_ports(1)
        addr4 = ("127.0.0.1", port4)
        from agents.raft.tlsconfig import client_context, server_context

        ca = CA(tmp_path / "tls" / "ca.pem", tmp_path / "tls" / "ca.key")  # the cluster's CA signs node 4
        n4 = issue(tmp_path / "tls", ca, "node-4")
        try:
            await c.start_all()
            leader = await c.leader()
            for i in range(10):
                await leader.propose(put(b"k%d" % i, b"v"), 10)
            cfg4 = NodeConfig(
                id=4,
                data_dir=tmp_path / "data-4",
                listen=addr4,
                peers=dict(c.addrs),  # existing members; it learns the configuration from the leader
                join=True,
                server_ssl=server_context(n4.cert, n4.key, n4.ca),
                client_ssl=client_context(n4.cert, n4.key, n4.ca),
                seed=4,
                **FAST,  # type: ignore[arg-type]
            )
            sm4 = KVStateMachine()
            node4 = RaftNode(cfg4, sm4)
            await node4.start()
            c.nodes[4], c.sms[4] = node4, sm4
            await leader.add_member(4, addr4, timeout=10)
            await until(lambda: 4 in leader.status()["voters"], what="node 4 promoted to voter")
            await until(lambda: len(sm4.data) == 10, what="node 4 catches up")
            assert all(n.addresses.get(4) == addr4 for n in c.nodes.values())

            await leader.remove_member(4, timeout=10)
            await until(lambda: 4 not in leader.status()["voters"], what="node 4 removed")
            assert 4 not in leader.addresses
            await leader.propose(put(b"after", b"removal"), 10)
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_second_node_on_same_data_dir_is_refused_and_stop_fails_requests(tmp_path: Path) -> None:
    from agents.raft.node import NodeStopped
    from agents.raft.storage import StorageLockedError

    async def main() -> None:
        c = Cluster(tmp_path, ids=(1,))
        node = await c.start(1)
        try:
            await until(lambda: node.is_leader, what="a one-member cluster elects itself")
            twin = RaftNode(c.config(1), KVStateMachine())
            with pytest.raises(StorageLockedError):
                await twin.start()
            await node.propose(put(b"a", b"1"), 5)
        finally:
            await c.stop_all()
        with pytest.raises(NodeStopped):
            await node.propose(put(b"b", b"2"))
        # the lock was released by stop(): the directory opens again and kept the data
        again = await c.start(1)
        try:
            await until(lambda: again.is_leader, what="re-election")
            await again.read_index(5)
            assert c.sms[1].data == {b"a": b"1"}
        finally:
            await c.stop_all()

    asyncio.run(main())


def test_proposal_overwritten_by_a_new_leader_fails_clearly(tmp_path: Path) -> None:
    """An isolated leader's uncommitted proposal is replaced by the new leader's entry: the proposer
    must learn that it was NOT committed (ProposalOverwritten), not get a success or hang."""
    from agents.raft.node import ProposalOverwritten
    from agents.raft.types import Message

    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            await c.start_all()
            old = await c.leader()
            await old.propose(put(b"a", b"1"), 10)
            others = [n for n in c.nodes.values() if n is not old]

            # Partition the leader (fault injection on the transports' edges).
            cut = True
            real_send = old._transport.send  # type: ignore[union-attr]

            def send(m: Message) -> None:
                if not cut:
                    real_send(m)

            old._transport.send = send  # type: ignore[union-attr,method-assign]
            for n in others:
                t = n._transport
                assert t is not None
                inner = t._on_message

                def on_message(m: Message, inner: Callable[[Message], None] = inner) -> None:
                    if not (cut and m.frm == old.id):
                        inner(m)

                t._on_message = on_message

            lost = old.submit(put(b"lost", b"x"))
            await until(lambda: any(n.is_leader for n in others), what="the majority elects a new leader")
            new = next(n for n in others if n.is_leader)
            await new.propose(put(b"won", b"y"), 10)
            cut = False  # heal: the old leader learns the new term and its entry is overwritten
            with pytest.raises(ProposalOverwritten):
                await asyncio.wait_for(lost, 10)
            await until(lambda: c.sms[old.id].data.get(b"won") == b"y", what="the old leader catches up")
            assert b"lost" not in c.sms[old.id].data
        finally:
            await c.stop_all()

    asyncio.run(main())
