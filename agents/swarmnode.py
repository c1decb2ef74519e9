"""This machine's membership in a swarm: what `docker swarm init/join/leave` change, kept on the node's
disk (`<state-dir>/swarm/`) so an agent restart resumes where it was, and the manager it runs.

The Docker API's /swarm endpoints and /info call into this object; it is also the `SwarmHandle` the
/_ping and /info handlers read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.cancel import cancel_and_wait
from agents.manager import ca, joinclient, keys
from agents.manager.allocator import ensure_ingress
from agents.manager.controlplane import ControlPlane
from agents.manager.dispatcher import Dispatcher
from agents.manager.errors import AlreadyInSwarm, FailedPrecondition, ManagerError, NoLeader, NotInSwarm
from agents.manager.keys import load_or_create_dek
from agents.manager.loop import ControlLoop
from agents.manager.manager import LoopFactory, Manager, ManagerConfig
from agents.manager.membership import CONTROL_PORT, RAFT_PORT, bootstrap, cluster_of, leave_warning, managers
from agents.pki import client as pkiclient
from agents.state.objects import (
    Cluster,
    EngineDescription,
    Node,
    NodeDescription,
    Platform,
    Resources,
    new_id,
)
from agents.worker.session import WorkerSession

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
ENGINE_VERSION = "26.1.0"
JOIN_READY_TIMEOUT = 10.0
"""How long `swarm join` waits for the node's dispatcher session (registered = Ready), as dockerd does."""


@dataclass
class SwarmTiming:
    """Raft and dispatcher timing (classroom defaults; Docker's are 1 s ticks and 5 s heartbeats)."""

    tick_interval: float = 0.1
    election_ticks: int = 10
    heartbeat_period_s: float = 1.0

    @classmethod
    def from_env(cls) -> SwarmTiming:
        """labctl passes a lab's timing to its agents through the environment."""
        t = cls()
        try:
            t.tick_interval = int(os.environ.get("LABAGENT_HEARTBEAT_MS", "100")) / 1000
            t.election_ticks = int(os.environ.get("LABAGENT_ELECTION_TICKS", "10"))
            t.heartbeat_period_s = float(os.environ.get("LABAGENT_NODE_HEARTBEAT_S", "1.0"))
        except ValueError:
            log.warning("ignoring malformed LABAGENT_* timing variables")
        return t


@dataclass
class PersistedState:
    node_id: str
    raft_id: int
    role: str  # "manager" | "worker"
    cluster_id: str
    advertise_ip: str
    managers: list[str] = field(default_factory=list)  # control addresses ("ip:2377") last known
    raft_peers: dict[str, list[Any]] = field(default_factory=dict)
    """Raft id -> [ip, port] of the managers last known. Raft's log carries the addresses of members that
    joined, but not of the first manager (it bootstrapped the cluster), so a restarting manager needs this
    to reach it."""

    def peers(self) -> dict[int, tuple[str, int]]:
        return {int(k): (str(v[0]), int(v[1])) for k, v in self.raft_peers.items()}

    def save(self, swarm_dir: Path) -> None:
        swarm_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = swarm_dir / f".{STATE_FILE}.tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, swarm_dir / STATE_FILE)

    @classmethod
    def load(cls, swarm_dir: Path) -> PersistedState | None:
        try:
            data = json.loads((swarm_dir / STATE_FILE).read_text())
            return cls(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise ManagerError(f"swarm state at {swarm_dir / STATE_FILE} is damaged: {e}") from None


def describe(hostname: str) -> NodeDescription:
    """What `docker node inspect` shows under Description, read from this machine."""
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return NodeDescription(
        hostname=hostname,
        platform=Platform(os="linux", architecture=platform.machine() or "x86_64"),
        resources=Resources(nano_cpus=(os.cpu_count() or 1) * 1_000_000_000, memory_bytes=mem),
        engine=EngineDescription(engine_version=ENGINE_VERSION),
    )


def _file_stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a credentials file is replaced (they are written by rename): inode, mtime, size."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class SwarmNode:
    def __init__(
        self,
        state_dir: Path,
        hostname: str,
        *,
        timing: SwarmTiming | None = None,
        loop_factories: list[LoopFactory] | None = None,
        control_port: int = CONTROL_PORT,
        raft_port: int = RAFT_PORT,
        fsync: bool = True,
        executor_factory: Callable[[str], Any] | None = None,
        network_plane: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.swarm_dir = state_dir / "swarm"
        self._tls_cache: tuple[tuple[tuple[int, int, int], ...], ca.NodeCredentials, Any] | None = None
        self.hostname = hostname
        self.timing = timing or SwarmTiming()
        self.loop_factories = loop_factories if loop_factories is not None else default_loops()
        self.control_port = control_port
        self.raft_port = raft_port
        self.fsync = fsync
        self.executor_factory = executor_factory
        self.network_plane = network_plane
        """Program the routing mesh (bridges, VXLAN, nftables) in this node's network namespace. In-process
        tests turn it off: their nodes share the test's namespace, which must be left untouched."""
        """Builds this node's task executor from its state dir (default: `make_executor`)."""
        self.state: PersistedState | None = None
        self.manager: Manager | None = None
        self.control: ControlPlane | None = None
        self.error = ""
        self._lock = asyncio.Lock()
        self._role_task: asyncio.Task[None] | None = None
        self._renew_at = ca.renewal_fraction()
        self.session: WorkerSession | None = None
        self.assignment_hooks: list[Callable[[Any], Any]] = []
        """Called with each assignment message (the worker agent subscribes here)."""
        self.worker: Any = None
        """This node's `agents.worker.agent.Worker` while it is in a swarm (containers, logs for the API)."""
        self.mesh: Any = None
        """This node's routing-mesh agent (`agents.mesh.agent.MeshAgent`) while it is in a swarm."""
        self.forward_to_local_api: Any = None
        """Replays a follower's forwarded Docker API request on this node's socket (set by the daemon; see
        `agents.api.forwarding`); given to the control plane's `/v1/forward`."""

    # --------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Resume the swarm membership recorded on disk, if any."""
        try:
            self.state = PersistedState.load(self.swarm_dir)
        except ManagerError as e:
            self.error = e.message
            log.error("%s", e.message)
            return
        if self.state is not None and self.state.role == "manager":
            try:
                await self._start_manager(join=False, force_new_cluster=False)
            except Exception as e:  # the node keeps serving the API and reports the error in /info
                self.error = f"manager failed to start: {e}"
                log.exception("manager failed to start")
        if self.state is not None:
            self._watch_role()

    async def stop(self) -> None:
        await self._stop_role_watch()
        await self._stop_manager()

    # --------------------------------------------------------------------------------------- roles
    def _watch_role(self) -> None:
        """Start what every node in a swarm runs: the dispatcher session and the role watch."""
        if self._role_task is None or self._role_task.done():
            self._role_task = asyncio.get_running_loop().create_task(self._role_loop(), name="role-watch")
        if self.session is None and self.state is not None:
            st = self.state
            self.session = WorkerSession(
                ca.NodeCredentials.load(self.state_dir), ca.RootCA.load(self.state_dir).cert_pem,
                st.managers or [f"{st.advertise_ip}:{self.control_port}"],
                {**{k: v for k, v in describe(self.hostname).to_dict().items() if k != "tls_info"},
                 "addr": st.advertise_ip},
                self._on_assignments,
            )
            self._start_mesh()
            self.session.start()
            self._start_worker()

    def _start_mesh(self) -> None:
        """Every node programs the routing mesh from the ``mesh`` messages of its session."""
        if self.mesh is not None or self.session is None or self.state is None or not self.network_plane:
            return
        from agents.mesh.agent import MeshAgent

        self.mesh = MeshAgent(self.state.node_id, self.state.advertise_ip)
        self.session.on_mesh = self.mesh.on_message

    async def _stop_mesh(self, *, remove: bool) -> None:
        mesh, self.mesh = self.mesh, None
        if mesh is not None:
            with contextlib.suppress(Exception):
                await mesh.stop(remove=remove)

    def _start_worker(self) -> None:
        """Every node in a swarm (managers too) runs the tasks assigned to it."""
        if self.worker is not None or self.session is None or self.state is None:
            return
        from agents.worker.agent import Worker, make_executor

        try:
            factory = self.executor_factory or make_executor
            worker = Worker(str(self.state_dir), self.session, factory(str(self.state_dir)),
                            node_id=self.state.node_id)
        except Exception:
            log.exception("the worker could not start: this node will run no tasks")
            return
        self.worker = worker
        if self.mesh is not None:
            worker.mesh_drain = self.mesh.drain
            net = getattr(worker.executor, "net", None)
            if net is not None and hasattr(net, "resolv_conf"):
                net.resolv_conf = self.mesh.resolv_conf
        self.assignment_hooks.append(worker.apply)
        asyncio.get_running_loop().create_task(worker.start(), name="worker-start")

    async def _stop_worker(self, *, remove_tasks: bool = False) -> None:
        """Stop managing tasks; they keep running (an agent restart adopts them) unless the node leaves."""
        worker, self.worker = self.worker, None
        if worker is None:
            return
        with contextlib.suppress(ValueError):
            self.assignment_hooks.remove(worker.apply)
        if remove_tasks:
            await worker.shutdown_tasks()
        await worker.stop()

    async def _on_assignments(self, assignments: Any) -> None:
        for hook in self.assignment_hooks:
            result = hook(assignments)
            if asyncio.iscoroutine(result):
                await result

    async def _stop_role_watch(self) -> None:
        await self._stop_worker()
        await self._stop_mesh(remove=False)
        task, self._role_task = self._role_task, None
        if task is not None:
            await cancel_and_wait(task)  # a stop that is itself cancelled stays cancelled
        session, self.session = self.session, None
        if session is not None:
            await session.stop()

    async def _role_loop(self) -> None:
        """Follow `docker node promote/demote`: ask a manager what this node should be, and become it.

        Runs until `_stop_role_watch` unsets `_role_task`: a role change stops and starts a manager, and a
        cancellation lost somewhere in there must not leave this loop running after stop() (it did).
        """
        period = max(0.2, self.timing.heartbeat_period_s)
        me = asyncio.current_task()
        while self._role_task is me:
            await asyncio.sleep(period)
            try:
                await self._check_role()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # managers unreachable, election under way: try again next period
                log.debug("role check failed: %s", e)

    def _known_raft_peers(self) -> dict[str, list[Any]]:
        """Raft addresses of the managers in the store (as persisted in `PersistedState.raft_peers`)."""
        st = self.state
        if self.manager is None or st is None:
            return st.raft_peers if st is not None else {}
        out: dict[str, list[Any]] = {}
        for n in managers(self.manager.store):
            ms = n.manager_status
            if ms is not None and ms.raft_id:
                out[str(ms.raft_id)] = [ms.addr.rsplit(":", 1)[0], self.raft_port]
        return out or st.raft_peers

    def _client_tls(self) -> Any:
        """The node's client TLS context, rebuilt only when its certificate, key or root CA changed on
        disk (renewal, role change, rotation): the role check asks for it every heartbeat period, and
        loading and checking the credentials each time cost every node a few ms of CPU per second."""
        return self._credentials()[1]

    def _credentials(self) -> tuple[ca.NodeCredentials, Any]:
        """This node's credentials and client TLS context, loaded again only when the files changed."""
        paths = keys.cert_paths(self.state_dir)
        stamp = tuple(_file_stamp(p) for p in (paths.node_cert, paths.node_key, paths.root_ca))
        cached = self._tls_cache
        if cached is None or cached[0] != stamp:
            creds = ca.NodeCredentials.load(self.state_dir)
            ctx = ca.client_context(creds, ca.RootCA.load(self.state_dir).cert_pem)
            cached = self._tls_cache = (stamp, creds, ctx)
        return cached[1], cached[2]

    def _other_managers(self) -> list[str]:
        st = self.state
        assert st is not None
        mine = f"{st.advertise_ip}:{self.control_port}"
        others = [m for m in st.managers if m != mine]
        if self.manager is not None:
            others = [n.manager_status.addr for n in managers(self.manager.store)
                      if n.manager_status is not None and n.manager_status.addr != mine] or others
        return others + ([mine] if self.manager is not None else [])

    async def _check_role(self) -> None:
        st = self.state
        if st is None:
            return
        tls = self._client_tls()
        info: dict[str, Any] | None = None
        candidates = self._other_managers()
        peers = self._known_raft_peers()
        if self.manager is not None and candidates and (candidates != st.managers or peers != st.raft_peers):
            st.managers = candidates  # remember who the managers are, for restarts and demotion
            st.raft_peers = peers
            st.save(self.swarm_dir)
        answered = ""
        for addr in candidates:
            try:
                info = await joinclient.get(addr, "/v1/role", tls)
                answered = addr
                break
            except ManagerError:
                continue
        if info is None:
            return
        if info["role"] == "manager" and st.role == "worker" and info.get("raft_id"):
            async with self._lock:
                await self._become_manager(int(info["raft_id"]), tls, answered)
        elif (info["role"] == "manager" and st.role == "manager" and info.get("raft_id")
              and int(info["raft_id"]) != st.raft_id):
            # Demoted and promoted again before this node saw the demotion: its Raft member was removed
            # and the role manager gave it a new one. Start Raft afresh under the new id.
            async with self._lock:
                await self._stop_manager()
                shutil.rmtree(self.swarm_dir / "raft", ignore_errors=True)
                await self._become_manager(int(info["raft_id"]), tls, answered)
        elif info["role"] == "worker" and st.role == "manager" and info.get("removed"):
            async with self._lock:
                await self._become_worker(tls, answered)
        elif ca.needs_renewal(self._credentials()[0], fraction=self._renew_at):
            async with self._lock:
                await self._renew_in_place(tls, answered)

    async def _renew(self, tls: Any, addr: str) -> None:
        creds = ca.NodeCredentials.load(self.state_dir)
        csr = await pkiclient.csr_for(creds.key_pem)  # out of process: the agent never loads cryptography
        answer = await joinclient.request(addr, "/v1/renew", {"csr": csr.decode()}, tls)
        ca.NodeCredentials(str(answer["cert"]).encode(), creds.key_pem).save(self.state_dir)

    async def _renew_in_place(self, tls: Any, via: str) -> None:
        """Renew the node certificate before it expires (at a random point between 50% and 80% of its
        life, as SwarmKit), then restart what holds TLS contexts so they present the new certificate."""
        await self._renew(tls, via)
        self._renew_at = ca.renewal_fraction()
        log.info("node certificate renewed")
        await self._stop_role_watch_session_only()
        if self.manager is not None:
            await self._stop_manager()
            await self._start_manager(join=False, force_new_cluster=False)
        self._watch_role()

    async def _stop_role_watch_session_only(self) -> None:
        session, self.session = self.session, None
        await self._stop_worker()
        await self._stop_mesh(remove=False)
        if session is not None:
            await session.stop()

    async def _become_manager(self, raft_id: int, tls: Any, via: str) -> None:
        st = self.state
        assert st is not None
        await self._renew(tls, via)
        st.role, st.raft_id = "manager", raft_id
        st.save(self.swarm_dir)
        # Ask to be added first: the answer names the other members, which a joining member must know to
        # answer the leader; the leader keeps retrying until our Raft listens.
        answer = await joinclient.request(via, "/v1/raft/join", {}, self._client_tls())
        peers = _raft_peers(answer.get("managers", []))
        peers[raft_id] = (st.advertise_ip, self.raft_port)
        await self._start_manager(join=True, force_new_cluster=False, raft_peers=peers)
        log.info("promoted: this node is now a manager (raft id %x)", raft_id)

    async def _become_worker(self, tls: Any, via: str) -> None:
        st = self.state
        assert st is not None
        await self._stop_manager()
        await self._renew(tls, via)
        shutil.rmtree(self.swarm_dir / "raft", ignore_errors=True)
        st.role, st.raft_id = "worker", 0
        st.save(self.swarm_dir)
        log.info("demoted: this node is now a worker")

    async def _start_manager(self, *, join: bool, force_new_cluster: bool,
                             raft_peers: dict[int, tuple[str, int]] | None = None) -> Manager:
        st = self.state
        assert st is not None
        creds = ca.NodeCredentials.load(self.state_dir)
        root_pem = ca.RootCA.load(self.state_dir).cert_pem
        dek = load_or_create_dek(self.state_dir)
        config = ManagerConfig(
            state_dir=self.swarm_dir, node_id=st.node_id, raft_id=st.raft_id, advertise_ip=st.advertise_ip,
            creds=creds, root_ca_pem=root_pem,
            raft_peers={**st.peers(), **(raft_peers or {}), st.raft_id: (st.advertise_ip, self.raft_port)},
            join=join, force_new_cluster=force_new_cluster, raft_port=self.raft_port,
            tick_interval=self.timing.tick_interval, election_ticks=self.timing.election_ticks,
            fsync=self.fsync, dek=dek,
        )
        manager = Manager(config, self.loop_factories)
        dispatcher = Dispatcher(
            manager.store, manager.committer, is_leader=lambda: manager.is_leader,
            leader_address=manager.leader_control_addr, cluster_id=st.cluster_id,
        )
        manager.add_leader_loop(dispatcher)
        await manager.start()
        control = ControlPlane(manager, forward_to_local_api=self.forward_to_local_api)
        dispatcher.add_routes(control.app)
        try:
            await control.start(st.advertise_ip, self.control_port)
        except BaseException:
            await manager.stop()
            raise
        self.manager, self.control = manager, control
        return manager

    async def _stop_manager(self) -> None:
        """Raft first (its loops close the dispatcher sessions), then the control plane: a stopping manager
        must not keep voting or leading while its HTTP server drains."""
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None
        if self.control is not None:
            await self.control.stop()
            self.control = None

    async def wait_leader(self, timeout: float) -> None:
        """Until this node's manager knows a leader (and, if it is the leader, has its loops running)."""
        assert self.manager is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.manager.raft.leader:
            if asyncio.get_running_loop().time() > deadline:
                raise NoLeader()
            await asyncio.sleep(0.02)

    # --------------------------------------------------------------------------------------- init/join
    async def init(self, advertise_ip: str, *, force_new_cluster: bool = False) -> str:
        """`docker swarm init`: a new cluster with this node as its only manager (or the restore flow)."""
        async with self._lock:
            if force_new_cluster:
                return await self._force_new_cluster(advertise_ip)
            if self.state is not None:
                raise AlreadyInSwarm()
            cluster_id, node_id = new_id(), new_id()
            raft_id = random.SystemRandom().getrandbits(63) | 1
            try:
                root, creds = await pkiclient.init_cluster(cluster_id, node_id)  # one signing process
            except (ValueError, pkiclient.PkiToolError) as e:
                raise ManagerError(f"could not create the swarm's certificates: {e}") from None
            self._reset_disk()
            root.save(self.state_dir)
            creds.save(self.state_dir)
            self.state = PersistedState(node_id, raft_id, "manager", cluster_id, advertise_ip,
                                        [f"{advertise_ip}:{self.control_port}"])
            self.state.save(self.swarm_dir)
            try:
                manager = await self._start_manager(join=False, force_new_cluster=False)
                await self._wait_self_leader(manager)
                with manager.store.batch() as tx:
                    bootstrap(tx, cluster_id=cluster_id, node_id=node_id, raft_id=raft_id,
                              advertise_ip=advertise_ip, root=root, description=describe(self.hostname))
                    ensure_ingress(tx)  # Docker creates the ingress network at init
                assert tx.changeset is not None
                result = await manager.commit(tx.changeset)
                if not result.ok:
                    raise ManagerError(f"could not create the cluster: {result.error}")
                self._watch_role()
            except BaseException:
                await self._stop_manager()
                self._reset_disk()
                self.state = None
                raise
            return node_id

    async def _wait_self_leader(self, manager: Manager) -> None:
        deadline = asyncio.get_running_loop().time() + self.timing.tick_interval * self.timing.election_ticks * 6
        while not manager.is_leader:
            if asyncio.get_running_loop().time() > deadline:
                raise NoLeader()
            await asyncio.sleep(0.01)

    async def _force_new_cluster(self, advertise_ip: str) -> str:
        """Restore flow: keep the cluster state on disk, become its only manager."""
        if self.state is None or self.state.role != "manager":
            if not (self.swarm_dir / STATE_FILE).exists():
                raise FailedPrecondition("no swarm state to recover from: --force-new-cluster needs /var/lib/docker/swarm")
            self.state = PersistedState.load(self.swarm_dir)
            assert self.state is not None
        await self._stop_manager()
        self.state.advertise_ip = advertise_ip
        self.state.save(self.swarm_dir)
        manager = await self._start_manager(join=False, force_new_cluster=True)
        await self._wait_self_leader(manager)
        self._watch_role()  # restored from a backup on a node that was outside the swarm: it has no session yet
        return self.state.node_id

    async def join(self, token: str, remote: str, advertise_ip: str) -> None:
        """`docker swarm join --token T MANAGER:2377`."""
        async with self._lock:
            if self.state is not None:
                raise AlreadyInSwarm()
            welcome, key_pem = await joinclient.join(
                remote, token, advertise_ip=advertise_ip, hostname=self.hostname,
                description={k: v for k, v in describe(self.hostname).to_dict().items() if k != "tls_info"},
            )
            self._reset_disk()
            ca.RootCA.from_pem(welcome["ca"].encode()).save(self.state_dir)
            ca.NodeCredentials(welcome["cert"].encode(), key_pem).save(self.state_dir)
            role = str(welcome["role"])
            self.state = PersistedState(
                str(welcome["node_id"]), int(welcome["raft_id"]), role, str(welcome["cluster_id"]), advertise_ip,
                [str(m["control"]) for m in welcome.get("managers", [])],
            )
            self.state.save(self.swarm_dir)
            self.state.raft_peers = {str(k): list(v) for k, v in _raft_peers(welcome.get("managers", [])).items()}
            self.state.save(self.swarm_dir)
            if role == "manager":
                peers = _raft_peers(welcome.get("managers", []))
                peers[self.state.raft_id] = (advertise_ip, self.raft_port)
                try:
                    manager = await self._start_manager(join=True, force_new_cluster=False, raft_peers=peers)
                    await self.wait_leader(self.timing.tick_interval * self.timing.election_ticks * 20)
                    await manager.read_barrier()
                except BaseException:
                    await self._stop_manager()
                    raise
            self._watch_role()
            if self.session is not None:  # as dockerd, answer once registered: `node ls` then says Ready
                with contextlib.suppress(TimeoutError):
                    await self.session.wait_connected(JOIN_READY_TIMEOUT)

    async def leave(self, force: bool) -> None:
        """`docker swarm leave [--force]`, with Docker's refusal for managers."""
        async with self._lock:
            if self.state is None:
                raise NotInSwarm()
            if self.manager is not None and not force:
                warning = leave_warning(self.manager.store, self.state.node_id)
                if warning is not None:
                    raise ManagerError(warning)
            if self.manager is not None and self.manager.is_leader and len(managers(self.manager.store)) > 1:
                try:  # hand leadership over so the others keep quorum and a leader at once
                    others = [m.manager_status.raft_id for m in managers(self.manager.store)
                              if m.manager_status and m.manager_status.raft_id != self.state.raft_id]
                    await self.manager.raft.transfer_leadership(others[0], timeout=3)
                    await self.manager.raft.remove_member(self.state.raft_id, timeout=3)
                except Exception as e:
                    log.warning("could not leave the raft cleanly: %s", e)
            await self._stop_worker(remove_tasks=True)
            await self._stop_mesh(remove=True)  # the node leaves: its nft table and VXLAN devices go
            await self._stop_role_watch()
            await self._stop_manager()
            self._reset_disk()
            self.state = None

    def _reset_disk(self) -> None:
        if self.swarm_dir.exists():
            shutil.rmtree(self.swarm_dir)

    # --------------------------------------------------------------------------------------- reporting
    def ping_status(self) -> str:
        if self.error:
            return "error"
        if self.state is None:
            return "inactive"
        return f"active/{self.state.role}"

    def info(self) -> dict[str, Any]:
        """The Swarm section of /info, as dockerd fills it."""
        st = self.state
        if st is None:
            return {"NodeID": "", "NodeAddr": "", "LocalNodeState": "error" if self.error else "inactive",
                    "ControlAvailable": False, "Error": self.error, "RemoteManagers": None}
        out: dict[str, Any] = {
            "NodeID": st.node_id,
            "NodeAddr": st.advertise_ip,
            "LocalNodeState": "active",
            "ControlAvailable": st.role == "manager" and self.manager is not None,
            "Error": self.error,
            "RemoteManagers": [{"NodeID": "", "Addr": a} for a in st.managers],
        }
        if self.mesh is not None:
            out["RoutingMesh"] = self.mesh.info()
        m = self.manager
        if m is not None and m.store.list(Cluster):
            nodes = m.store.list(Node)
            mgrs = managers(m.store)
            out["RemoteManagers"] = [
                {"NodeID": n.id, "Addr": n.manager_status.addr} for n in mgrs if n.manager_status is not None
            ]
            out["Nodes"] = len(nodes)
            out["Managers"] = len(mgrs)
            from agents.api.convert import cluster_info_json  # the API's JSON shape; no key material

            out["Cluster"] = cluster_info_json(cluster_of(m.store))
        return out


def _raft_peers(managers_list: list[dict[str, Any]]) -> dict[int, tuple[str, int]]:
    """Raft addresses from a control-plane answer's manager list."""
    peers: dict[int, tuple[str, int]] = {}
    for m in managers_list:
        ip, _, port = str(m["raft"]).rpartition(":")
        peers[int(m["raft_id"])] = (ip, int(port))
    return peers


def default_loops() -> list[LoopFactory]:
    """The leader's control loops, in start order: allocation before scheduling before orchestration,
    so the first pass of each finds the previous one's work (they all react to store events anyway)."""
    from agents.manager.allocator import Allocator
    from agents.manager.orchestrator.globalmode import GlobalOrchestrator
    from agents.manager.orchestrator.reaper import TaskReaper
    from agents.manager.orchestrator.replicated import ReplicatedOrchestrator
    from agents.manager.rolemanager import role_manager
    from agents.manager.scheduler.scheduler import Scheduler

    return [
        role_manager,
        lambda m: Allocator(m.store, m.committer),
        lambda m: Scheduler(m.store, m.committer),
        lambda m: ReplicatedOrchestrator(m.store, m.committer),
        lambda m: GlobalOrchestrator(m.store, m.committer),
        lambda m: TaskReaper(m.store, m.committer),
    ]


__all__ = ["ControlLoop", "SwarmNode", "SwarmTiming"]
