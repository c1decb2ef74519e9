"""Real processes: 3 ``python -m agents.raft.kv`` members over mutual TLS on 127.0.0.1 survive kill -9."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agents.raft.kv import KVClient, KVError
from agents.raft.kvcluster import LocalCluster
from agents.raft.types import NotLeader

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    # Faster than the default timing (50 ms ticks, 0.5-1 s elections) to keep the test short.
    c = LocalCluster(tls=True, fsync=True, tick_ms=50, election_ticks=10, forward=True)
    try:
        yield c
    finally:
        c.close()  # SIGKILL every process group, remove the temp dir
        assert not any(c.alive(n) for n in c.ids)
        assert not c.root.exists()


async def put_anywhere(c: LocalCluster, nodes: list[int], key: bytes, value: bytes, timeout: float = 20.0) -> int:
    """Write through whichever of ``nodes`` leads (following NotLeader hints), retrying through elections."""
    deadline = time.monotonic() + timeout
    target = nodes[0]
    while True:
        try:
            client = await KVClient.connect("127.0.0.1", c.client_ports[target], timeout=1.0)
            try:
                return await client.put(key, value, timeout=2.0)
            finally:
                await client.close()
        except NotLeader as e:
            target = e.leader if e.leader in nodes else nodes[(nodes.index(target) + 1) % len(nodes)]
        except (TimeoutError, OSError, ConnectionError, KVError):  # e.g. relayed to a dead leader
            target = nodes[(nodes.index(target) + 1) % len(nodes)]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no commit through {nodes} within {timeout}s")
        await asyncio.sleep(0.05)


def test_kill_leader_new_leader_commits_and_restarted_node_catches_up(cluster: LocalCluster) -> None:
    async def main() -> None:
        cluster.start()
        leader = await cluster.wait_leader(timeout=20)
        await put_anywhere(cluster, [leader], b"k", b"v1")

        cluster.kill(leader)  # SIGKILL: no goodbye, no flush beyond what was fsynced
        survivors = [n for n in cluster.ids if n != leader]
        await put_anywhere(cluster, survivors, b"k", b"v2")
        new_leader = await cluster.wait_leader(timeout=20, among=tuple(survivors))
        assert new_leader != leader

        cluster.start_node(leader)  # same data directory
        client = await cluster.client(leader, timeout=20)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    value = await client.get(b"k", timeout=5)  # read barrier, then local read
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            assert value == b"v2"
            st = await client.status()
            assert st["leader"] == new_leader and st["role"] == "follower"
            # --forward-to: a put sent to a follower is relayed to the leader
            await client.put(b"k", b"v3", timeout=5)
            assert await client.get(b"k", timeout=5) == b"v3"
        finally:
            await client.close()

    asyncio.run(main())
