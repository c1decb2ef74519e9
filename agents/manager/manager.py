"""A swarm manager: the replicated store on Raft, the control plane, and the leader's control loops.

Every manager applies the same Raft log to its `Store`. Only the leader runs control loops (allocator,
scheduler, orchestrators, updater, reaper, dispatcher bookkeeping, manager-status reconciler); when
leadership moves, the old leader stops its loops and the new one starts fresh ones from the store, so no
loop state needs to survive a failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.cancel import cancel_and_wait
from agents.manager import ca
from agents.manager.errors import NoLeader, NotLeader
from agents.manager.loop import Committer, ControlLoop, LocalCommitter
from agents.manager.membership import RAFT_PORT, cluster_of, managers, with_leader_flags
from agents.manager.replication import RaftCommitter, StoreStateMachine
from agents.raft.node import NodeConfig, RaftNode
from agents.raft.storage import AesGcmCipher
from agents.state.changeset import Changeset
from agents.state.objects import Node
from agents.state.store import ApplyResult, Store

log = logging.getLogger(__name__)

LoopFactory = Callable[["Manager"], ControlLoop]


@dataclass
class ManagerConfig:
    state_dir: Path  # <node state>/swarm
    node_id: str
    raft_id: int
    advertise_ip: str
    creds: ca.NodeCredentials
    root_ca_pem: bytes
    raft_peers: dict[int, tuple[str, int]] = field(default_factory=dict)  # raft id -> (ip, port), self included
    join: bool = False  # a manager joining an existing cluster: start Raft empty and wait to be added
    force_new_cluster: bool = False
    raft_port: int = RAFT_PORT
    tick_interval: float = 0.1
    election_ticks: int = 10
    fsync: bool = True
    dek: bytes | None = None  # encrypts the Raft log and snapshots at rest
    commit_timeout: float | None = None  # default: 4 election timeouts


class Manager:
    def __init__(self, config: ManagerConfig, loop_factories: Sequence[LoopFactory] = ()) -> None:
        self.config = config
        self.store = Store()
        self._loop_factories = list(loop_factories)
        self._loops: list[ControlLoop] = []
        self._fixed_loops: list[ControlLoop] = []  # built once (their routes are mounted), run while leading
        self._leading = False
        self._watch_task: asyncio.Task[None] | None = None
        self._leader_hooks: list[Callable[[bool], None]] = []
        self._leaderless_since: float | None = None  # loop time this manager last lost sight of a leader
        self._stopping = False
        self.raft = RaftNode(self._raft_config(), StoreStateMachine(self.store))
        timeout = config.commit_timeout or config.tick_interval * config.election_ticks * 4
        self.committer: Committer = RaftCommitter(self.raft, self.control_addr_of_raft, timeout)

    def _raft_config(self) -> NodeConfig:
        cfg = self.config
        root = ca.RootCA.from_pem(cfg.root_ca_pem)
        peers = dict(cfg.raft_peers) or {cfg.raft_id: (cfg.advertise_ip, cfg.raft_port)}

        def manager_only(writer: asyncio.StreamWriter) -> bool:
            """Raft is for managers: a worker's certificate (same CA, chain verified by TLS) is refused."""
            try:
                ca.require_role(ca.peer_certificate(writer), ca.Role.MANAGER)
            except (ca.PermissionDeniedError, ValueError, TypeError):
                return False
            return True

        return NodeConfig(
            id=cfg.raft_id,
            data_dir=cfg.state_dir / "raft",
            listen=(cfg.advertise_ip, cfg.raft_port),
            peers=peers,
            tick_interval=cfg.tick_interval,
            election_ticks=cfg.election_ticks,
            fsync=cfg.fsync,
            join=cfg.join,
            force_new_cluster=cfg.force_new_cluster,
            server_ssl=ca.server_context(cfg.creds, root, require_client_cert=True),
            client_ssl=ca.client_context(cfg.creds, root),
            cipher=AesGcmCipher(cfg.dek) if cfg.dek is not None else None,
            authorize_peer=manager_only,
        )

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.raft.start()
        self._watch_task = asyncio.get_running_loop().create_task(self._watch_leadership(), name="leadership")

    async def stop(self) -> None:
        self._stopping = True  # ends the leadership watch even if a cancellation gets lost below it
        if self._watch_task is not None:
            await cancel_and_wait(self._watch_task)
            self._watch_task = None
        await self._stop_loops()
        await self.raft.stop()

    def add_leader_loop(self, loop: ControlLoop) -> None:
        """A loop built once (e.g. the dispatcher, whose routes are mounted once) that runs while leading."""
        self._fixed_loops.append(loop)
        if self._leading:
            loop.start()

    def on_leadership(self, hook: Callable[[bool], None]) -> None:
        """Called with True when this manager becomes leader and False when it stops being one."""
        self._leader_hooks.append(hook)

    # ------------------------------------------------------------------------------------------ leadership
    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    def control_addr_of_raft(self, raft_id: int) -> str | None:
        for n in managers(self.store):
            if n.manager_status is not None and n.manager_status.raft_id == raft_id:
                return n.manager_status.addr
        return None

    def leader_control_addr(self) -> str | None:
        leader = self.raft.leader
        return self.control_addr_of_raft(leader) if leader else None

    @property
    def election_timeout(self) -> float:
        return self.config.tick_interval * self.config.election_ticks

    def leaderless_for(self) -> float:
        """Seconds this manager has known no leader (0 while it knows one). SwarmKit answers "no leader"
        at once after an election timeout without one, and waits for the election before that."""
        if self.raft.leader or self._leaderless_since is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._leaderless_since

    async def _watch_leadership(self) -> None:
        """Start loops on gaining leadership, stop them on losing it; keep ManagerStatus current."""
        interval = max(0.02, self.config.tick_interval / 2)
        while not self._stopping:
            leading = self.raft.is_leader
            if self.raft.leader:
                self._leaderless_since = None
            elif self._leaderless_since is None:
                self._leaderless_since = asyncio.get_running_loop().time()
            if leading and not self._leading:
                self._leading = True
                log.info("became leader (raft id %x)", self.config.raft_id)
                await self._start_loops()
                for hook in self._leader_hooks:
                    hook(True)
            elif not leading and self._leading:
                self._leading = False
                log.info("lost leadership")
                await self._stop_loops()
                for hook in self._leader_hooks:
                    hook(False)
            if leading:
                await self._reconcile_manager_status()
            await asyncio.sleep(interval)

    async def _start_loops(self) -> None:
        self._loops = [factory(self) for factory in self._loop_factories]
        for loop in [*self._fixed_loops, *self._loops]:
            loop.start()

    async def _stop_loops(self) -> None:
        loops, self._loops = self._loops, []
        for loop in reversed([*self._fixed_loops, *loops]):
            await loop.stop()

    async def _reconcile_manager_status(self) -> None:
        """The leader keeps `ManagerStatus.leader` and `reachability` of every manager true to Raft."""
        status = self.raft.raft_status()
        if not self.store.list(Node):
            return
        with self.store.batch() as tx:
            for node in managers(self.store):
                ms = node.manager_status
                assert ms is not None
                progress = status.progress.get(ms.raft_id)
                reachable = ms.raft_id == self.config.raft_id or (progress is not None and progress.recent_active)
                updated = with_leader_flags(node, self.config.raft_id, reachable)
                if updated is not None:
                    tx.update(updated)
        if tx.changeset is not None and tx.changeset.ops:
            with contextlib.suppress(NoLeader, NotLeader):
                await self.commit(tx.changeset)

    # ------------------------------------------------------------------------------------------ writes
    async def commit(self, changeset: Changeset) -> ApplyResult:
        """Replicate a changeset (leader only); raises NotLeader / NoLeader as Docker would answer."""
        return await self.committer.commit(changeset)

    async def read_barrier(self) -> None:
        """Linearizable reads: wait until this manager has applied everything the leader had committed."""
        if self.leaderless_for() > 2 * self.election_timeout:
            raise NoLeader()  # quorum is lost: answer at once, as the forwarded requests do
        try:
            await self.raft.read_index(timeout=self.config.tick_interval * self.config.election_ticks * 4)
        except TimeoutError:
            raise NoLeader() from None

    def cluster_id(self) -> str:
        return cluster_of(self.store).id


def local_manager_committer(store: Store) -> Committer:
    """For tools and tests that drive loops without Raft."""
    return LocalCommitter(store)


def tls_for_control(config: ManagerConfig) -> ssl.SSLContext:
    """The control plane's server context: client certificates optional (joiners have none yet)."""
    return ca.server_context(config.creds, ca.RootCA.from_pem(config.root_ca_pem), require_client_cert=False)
