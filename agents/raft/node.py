"""The asyncio runner: drives a :class:`RaftCore` with a :class:`RaftStorage` and a :class:`Transport`.

One task owns the core. Everything that mutates it (received messages, ticks, proposals, reads,
configuration changes) is queued and handed to the core between two Ready cycles, so the core only
ever sees the ``ready() -> persist -> send -> apply -> advance`` sequence of ``agents.raft.types``.

Group commit: the fsync of a Ready runs in a worker thread; proposals and messages that arrive while it is
in flight are queued and enter the core together, so they share the next Ready and its single fsync.
That batching, not raw per-entry speed, is where a durable Python Raft gets its throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack

from agents.raft.core import Config, RaftCore, decode_conf_change, encode_conf_change
from agents.raft.storage import Cipher, RaftStorage
from agents.raft.transport import Transport
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
    ProposalDropped,
    RaftError,
    Ready,
    Role,
    Snapshot,
    Status,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Address = tuple[str, int]


class StateMachine(Protocol):
    """What the runner replicates. ``apply`` must be deterministic; its result goes to the proposer."""

    def apply(self, entry: Entry) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class NodeStopped(RaftError):
    """The node stopped (or failed) before the request completed."""


class ProposalOverwritten(RaftError):
    """Another leader's entry replaced ours at the same index: the proposal was NOT committed."""

    def __init__(self, index: int, term: int, got_term: int) -> None:
        super().__init__(f"entry {index} of term {term} was overwritten by an entry of term {got_term}")
        self.index = index


class ProposalOutcomeUnknown(RaftError):
    """A snapshot skipped past the proposal's index: it may or may not have been committed."""


@dataclass(frozen=True)
class NodeConfig:
    """How to run one member. ``peers`` maps member ids (self included) to Raft addresses."""

    id: NodeId
    data_dir: Path
    listen: Address
    peers: Mapping[NodeId, Address]
    tick_interval: float = 0.1  # seconds per tick = heartbeat interval when heartbeat_ticks == 1
    election_ticks: int = 10  # randomized by the core in [election, 2*election) ticks
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_every: int = 10_000  # compact after this many applied entries (0: never)
    fsync: bool = True
    join: bool = False  # a new member: start with no configuration and wait for the leader
    force_new_cluster: bool = False  # restore flow: keep the data, become a one-member cluster
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    max_queue: int = 4096
    cipher: Cipher | None = None  # encrypts WAL payloads and snapshots at rest (the swarm's DEK)
    authorize_peer: Callable[[asyncio.StreamWriter], bool] | None = None  # who may send us Raft messages
    seed: int | None = None
    core_options: Mapping[str, Any] = field(default_factory=dict)  # extra Config fields


def encode_address(addr: Address) -> bytes:
    return f"{addr[0]}:{addr[1]}".encode()


def decode_address(raw: bytes) -> Address:
    host, _, port = raw.decode().rpartition(":")
    return host, int(port)


def _pack_snapshot(addresses: Mapping[NodeId, Address], sm_data: bytes) -> bytes:
    """Frame the state machine's snapshot with the member addresses, so they survive compaction."""
    out: bytes = msgpack.packb([1, {k: list(v) for k, v in addresses.items()}, sm_data], use_bin_type=True)
    return out


def _unpack_snapshot(data: bytes) -> tuple[dict[NodeId, Address], bytes]:
    version, addrs, sm_data = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if version != 1:
        raise ValueError(f"unknown snapshot framing version {version}")
    return {int(k): (str(v[0]), int(v[1])) for k, v in addrs.items()}, bytes(sm_data)


Completion = Callable[[Any, BaseException | None], None]
"""Called once with ``(result, None)`` or ``(None, error)`` when a proposal's fate is known."""


def _completes(fut: asyncio.Future[Any]) -> Completion:
    def done(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)

    return done


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


async def _within(aw: Awaitable[_T], timeout: float | None) -> _T:
    """``asyncio.wait_for`` without its Python 3.11 flaw: when a cancellation arrives just as ``aw``
    completes, wait_for returns the result and drops the cancellation, so a control loop stopped on
    losing leadership (the moment a leadership transfer completes) ran on. ``asyncio.timeout`` keeps it."""
    async with asyncio.timeout(timeout):
        return await aw


class _Pending:
    """A proposal waiting for its entry to be applied."""

    __slots__ = ("done", "index", "term")

    def __init__(self, done: Completion) -> None:
        self.done = done
        self.index = 0
        self.term = 0


class RaftNode:
    """A Raft member on an asyncio loop. Start with :meth:`start`, finish with :meth:`stop`."""

    def __init__(self, config: NodeConfig, state_machine: StateMachine) -> None:
        self.config = config
        self.sm = state_machine
        self._rng = random.Random(config.seed)
        self._storage: RaftStorage | None = None
        self._core: RaftCore | None = None
        self._transport: Transport | None = None
        self._addresses: dict[NodeId, Address] = dict(config.peers)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raft-wal-{config.id}")
        # inputs queued for the core (drained between Ready cycles)
        self._inbox: list[Message] = []
        self._proposals: list[tuple[bytes, _Pending]] = []
        self._commands: list[Callable[[RaftCore], None]] = []
        self._ticks = 0
        self._wake = asyncio.Event()
        # waiting for apply
        self._pending: dict[int, _Pending] = {}
        self._read_waiters: list[asyncio.Future[None]] = []  # not yet sent to the core
        self._reads_inflight: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reads_ready: list[tuple[int, int, list[asyncio.Future[None]]]] = []  # heap by index
        self._read_seq = itertools.count(1)
        self._leader_waiters: list[tuple[NodeId, asyncio.Future[None]]] = []
        self._voter_waiters: dict[NodeId, list[asyncio.Future[None]]] = {}
        self._applied = 0
        self._snapshot_index = 0
        self._snapshot_inflight: set[NodeId] = set()
        self._transport_peers: set[NodeId] = set()
        self._leader: NodeId = NONE
        self._role: Role = Role.FOLLOWER
        self._run_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failed: BaseException | None = None
        self._failure: asyncio.Future[BaseException] | None = None
        self._stats = {"readies": 0, "fsyncs": 0, "entries_saved": 0, "applied_entries": 0, "sent": 0}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the WAL, rebuild the core from it, listen, and start ticking."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        storage = await loop.run_in_executor(
            self._executor, lambda: RaftStorage.open(cfg.data_dir, fsync=cfg.fsync, cipher=cfg.cipher)
        )
        self._storage = storage
        try:
            await self._start(storage)
        except BaseException:
            self._storage = None
            await loop.run_in_executor(self._executor, storage.close)  # releases the directory lock
            self._executor.shutdown(wait=False)
            raise

    async def _start(self, storage: RaftStorage) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        restored = await loop.run_in_executor(self._executor, storage.load)
        fresh = (
            restored.snapshot is None and not restored.entries and restored.hard_state == HardState()
        )
        core_cfg = Config(
            id=cfg.id,
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
            pre_vote=cfg.pre_vote,
            check_quorum=cfg.check_quorum,
            **dict(cfg.core_options),
        )
        if restored.snapshot is not None:
            self._restore_snapshot(restored.snapshot)
        conf: ConfState | None = None
        if fresh and not cfg.join:
            conf = ConfState(voters=tuple(sorted(cfg.peers)))
        self._core = RaftCore(
            core_cfg,
            self._rng,
            hard_state=restored.hard_state,
            snapshot=restored.snapshot,
            entries=tuple(restored.entries),
            conf=conf,
        )
        if cfg.force_new_cluster:
            self._core.force_new_cluster()
            self._addresses = {cfg.id: self._addresses.get(cfg.id, cfg.listen)}
        self._transport = Transport(
            cfg.id,
            cfg.listen,
            self._on_message,
            server_ssl=cfg.server_ssl,
            client_ssl=cfg.client_ssl,
            max_queue=cfg.max_queue,
            on_unreachable=self._on_unreachable,
            authorize=cfg.authorize_peer,
        )
        self._sync_transport_peers()
        await self._transport.start()
        self._failure = loop.create_future()
        self._run_task = asyncio.create_task(self._run(), name=f"raft-{cfg.id}")
        self._tick_task = asyncio.create_task(self._ticker(), name=f"raft-tick-{cfg.id}")
        self._wake.set()

    async def stop(self) -> None:
        """Stop ticking and serving, let an in-flight fsync finish, close the WAL."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        if self._run_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._run_task
        if self._transport is not None:
            await self._transport.stop()
        self._fail_all(NodeStopped("node stopped"))
        if self._storage is not None:
            storage = self._storage
            self._storage = None
            await asyncio.get_running_loop().run_in_executor(self._executor, storage.close)
        self._executor.shutdown(wait=True)

    async def wait_failed(self) -> BaseException:
        """Returns the error that stopped the node's loop (e.g. a failed fsync); a server should exit then."""
        if self._failure is None:
            raise NodeStopped("node not started")
        return await asyncio.shield(self._failure)

    @property
    def id(self) -> NodeId:
        return self.config.id

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.port)

    @property
    def leader(self) -> NodeId:
        return self._leader

    @property
    def is_leader(self) -> bool:
        return self._role == Role.LEADER

    @property
    def applied(self) -> int:
        return self._applied

    @property
    def addresses(self) -> dict[NodeId, Address]:
        return dict(self._addresses)

    def raft_status(self) -> Status:
        """The core's own :class:`Status` (typed; :meth:`status` is the serialisable superset)."""
        return self._require_core().status()

    def status(self) -> dict[str, Any]:
        """Core status plus runner and transport counters (for `labctl status` and benchmarks)."""
        st: Status = self._require_core().status()
        out: dict[str, Any] = {
            "id": st.id,
            "term": st.term,
            "role": st.role.name.lower(),
            "leader": st.leader,
            "commit": st.commit,
            "applied": self._applied,
            "first_index": st.first_index,
            "last_index": st.last_index,
            "voters": list(st.voters),
            "learners": list(st.learners),
            "progress": {
                p: {"match": pr.match, "next": pr.next, "state": pr.state, "active": pr.recent_active}
                for p, pr in st.progress.items()
            },
            "snapshot_index": self._snapshot_index,
            "runner": dict(self._stats),
        }
        if self._transport is not None:
            out["transport"] = self._transport.stats()
        return out

    # ------------------------------------------------------------------ client API

    def submit(self, data: bytes) -> asyncio.Future[Any]:
        """Queue a proposal; the future resolves with the state machine's result once applied.

        Raises :class:`NotLeader` right away on a known non-leader (callers forward). Empty ``data`` is
        refused: the core uses empty entries as a new leader's no-op.
        """
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit_cb(data, _completes(fut))
        return fut

    def submit_cb(self, data: bytes, done: Completion) -> None:
        """:meth:`submit` without a Future: ``done(result, error)`` is called from the loop when applied.

        The cheap path for servers that answer many pipelined requests (no Future, no extra loop turn).
        """
        if not data:
            raise ValueError("empty proposals are reserved for the leader's no-op")
        if self._role != Role.LEADER or self._stopping or self._failed is not None:
            self._check_running()
            raise NotLeader(self._leader)
        self._proposals.append((data, _Pending(done)))
        self._wake.set()

    async def propose(self, data: bytes, timeout: float | None = None) -> Any:
        """Replicate ``data``; return what ``StateMachine.apply`` returned for it."""
        fut = self.submit(data)
        if timeout is None:
            return await fut
        return await _within(fut, timeout)

    async def read_index(self, timeout: float | None = None) -> None:
        """Linearizable read barrier: returns once this node has applied everything committed before.

        Concurrent callers share one read-index round. A round lost to an election is re-issued.
        """
        self._check_running()
        deadline = None if timeout is None else time.monotonic() + timeout
        retry = self._election_timeout_s() * 2
        while True:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._read_waiters.append(fut)
            self._wake.set()
            wait = retry if deadline is None else min(retry, deadline - time.monotonic())
            try:
                await _within(asyncio.shield(fut), max(wait, 0.0))
                return
            except TimeoutError:
                fut.cancel()
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    async def transfer_leadership(self, to: NodeId, timeout: float | None = None) -> None:
        """Ask the leader to hand over to ``to``; returns when this node sees ``to`` lead."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._leader == to:
            return
        self._leader_waiters.append((to, fut))
        self._command_fut(lambda core: core.transfer_leadership(to), fut)
        await _within(fut, timeout if timeout is not None else self._election_timeout_s() * 3)

    async def add_member(
        self, node_id: NodeId, address: Address, *, voter: bool = True, timeout: float | None = None
    ) -> None:
        """Add a member (on the leader); returns once it is a voter (``voter``) or a learner.

        Its address rides in the ConfChange, so every member, and every snapshot, learns it. A new voter
        joins as a learner and the leader promotes it once it has caught up; this waits for that too.
        """
        kind = ConfChangeType.ADD_VOTER if voter else ConfChangeType.ADD_LEARNER
        # The core replicates to the new member as soon as the change is appended: let the transport
        # reach it now rather than when the change is applied.
        if node_id != self.config.id and self._transport is not None and node_id not in self._addresses:
            self._addresses[node_id] = address
            self._sync_transport_peers()
        promoted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if voter:
            self._voter_waiters.setdefault(node_id, []).append(promoted)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            await self._conf_change(ConfChange(kind, node_id, encode_address(address)), deadline)
            if voter:
                await _within(asyncio.shield(promoted), _remaining(deadline))
        finally:
            promoted.cancel()

    async def remove_member(self, node_id: NodeId, timeout: float | None = None) -> None:
        """Remove a member (on the leader). Removing the leader itself hands leadership over first and
        raises :class:`ProposalDropped`: retry on the new leader."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._conf_change(ConfChange(ConfChangeType.REMOVE, node_id), deadline)

    async def _conf_change(self, cc: ConfChange, deadline: float | None) -> None:
        """Propose ``cc`` and wait until it is applied, retrying while another change is in flight."""
        while True:
            self._check_running()
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            pending = _Pending(_completes(fut))

            def go(core: RaftCore, pending: _Pending = pending) -> None:
                index = core.propose_conf_change(cc)
                self._track(pending, index, core)

            self._command_fut(go, fut)
            try:
                await _within(fut, _remaining(deadline))
                return
            except ProposalDropped as e:
                retry = "configuration change is pending" in str(e) and self._role == Role.LEADER
                if not retry or (deadline is not None and time.monotonic() >= deadline):
                    raise
            await asyncio.sleep(self.config.tick_interval)

    # ------------------------------------------------------------------ inputs

    def _on_message(self, msg: Message) -> None:
        self._inbox.append(msg)
        self._wake.set()

    def _on_unreachable(self, peer: NodeId) -> None:
        def go(core: RaftCore) -> None:
            core.report_unreachable(peer)
            if peer in self._snapshot_inflight:
                self._snapshot_inflight.discard(peer)
                core.report_snapshot(peer, False)

        self._command(go)

    def _command(self, fn: Callable[[RaftCore], None]) -> None:
        self._commands.append(fn)
        self._wake.set()

    def _command_fut(self, fn: Callable[[RaftCore], None], fut: asyncio.Future[Any]) -> None:
        """Run ``fn`` on the core; an exception it raises fails ``fut``."""

        def go(core: RaftCore) -> None:
            try:
                fn(core)
            except Exception as e:  # RaftError, or ValueError for a bad request: the caller's problem
                if not fut.done():
                    fut.set_exception(e)

        self._command(go)

    async def _ticker(self) -> None:
        interval = self.config.tick_interval
        loop = asyncio.get_running_loop()
        nxt = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, nxt - loop.time()))
            nxt += interval
            if nxt < loop.time():  # we fell behind (a stalled loop); don't fire a burst of ticks
                nxt = loop.time() + interval
            self._ticks += 1
            self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        core = self._require_core()
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    break
                self._drain(core)
                while core.has_ready():
                    rd = core.ready()
                    self._stats["readies"] += 1
                    await self._persist(rd)
                    self._send(rd)
                    self._apply(rd, core)
                    core.advance(rd)
                    self._after_advance(core)
                    if self._stopping:
                        break
                    self._drain(core)  # what arrived during the fsync: the next group commit
        except Exception as e:
            log.exception("raft node %s failed; stopping", self.config.id)
            self._failed = e
            self._fail_all(NodeStopped(f"raft node failed: {e!r}"))
            if self._failure is not None and not self._failure.done():
                self._failure.set_result(e)

    def _drain(self, core: RaftCore) -> None:
        if self._ticks:
            n, self._ticks = self._ticks, 0
            for _ in range(n):
                core.tick()
        if self._inbox:
            msgs, self._inbox = self._inbox, []
            step = core.step
            for m in msgs:
                try:
                    step(m)
                except RaftError as e:  # a malformed or stale message must not kill the node
                    log.debug("node %s dropped %s from %s: %s", self.config.id, m.type.name, m.frm, e)
        if self._commands:
            cmds, self._commands = self._commands, []
            for fn in cmds:
                try:
                    fn(core)
                except Exception:  # a request's failure is its caller's, never the loop's
                    log.exception("node %s: a command on the core failed", self.config.id)
        if self._proposals:
            self._propose_batch(core)
        if self._read_waiters:
            waiters = [f for f in self._read_waiters if not f.done()]
            self._read_waiters = []
            if self._reads_inflight:  # rounds lost to an election: their callers have retried or gone
                for k in [k for k, ws in self._reads_inflight.items() if all(f.done() for f in ws)]:
                    del self._reads_inflight[k]
            if waiters:
                ctx = next(self._read_seq).to_bytes(8, "big")
                try:
                    core.read_index(ctx)
                except RaftError as e:
                    for f in waiters:
                        f.set_exception(e)
                else:
                    self._reads_inflight[ctx] = waiters

    def _propose_batch(self, core: RaftCore) -> None:
        props, self._proposals = self._proposals, []
        propose = core.propose
        term = -1
        pending = self._pending
        for data, p in props:
            try:
                index = propose(data)
            except RaftError as e:
                p.done(None, e)
                continue
            if term < 0:
                term = self._term(core)
            p.index, p.term = index, term
            pending[index] = p

    def _track(self, p: _Pending, index: int, core: RaftCore) -> None:
        p.index, p.term = index, self._term(core)
        self._pending[index] = p

    @staticmethod
    def _term(core: RaftCore) -> int:
        return core.term

    async def _persist(self, rd: Ready) -> None:
        if rd.snapshot is None and not rd.entries and rd.hard_state is None:
            return
        storage = self._storage
        assert storage is not None
        await asyncio.get_running_loop().run_in_executor(
            self._executor, storage.save, rd.hard_state, rd.entries, rd.snapshot
        )
        self._stats["fsyncs"] += 1
        self._stats["entries_saved"] += len(rd.entries)

    def _send(self, rd: Ready) -> None:
        if not rd.messages:
            return
        transport = self._transport
        assert transport is not None
        send = transport.send
        for m in rd.messages:
            send(m)
            if m.type == MessageType.SNAPSHOT:
                self._snapshot_inflight.add(m.to)
        self._stats["sent"] += len(rd.messages)

    def _apply(self, rd: Ready, core: RaftCore) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        if rd.snapshot is not None and rd.snapshot.meta.index > self._applied:
            self._restore_snapshot(rd.snapshot)  # from the leader (our own compactions are already applied)
        if rd.committed:
            pending = self._pending
            sm_apply = self.sm.apply
            for e in rd.committed:
                if e.index <= self._applied:
                    continue
                err: BaseException | None = None
                result: Any = None
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_change(e)
                elif e.data:
                    try:
                        result = sm_apply(e)
                    except Exception as ex:  # deterministic failure: report it to the proposer
                        err = ex
                self._applied = e.index
                p = pending.pop(e.index, None) if pending else None
                if p is not None:
                    if p.term != e.term:
                        result, err = None, ProposalOverwritten(e.index, p.term, e.term)
                    try:
                        p.done(result, err)
                    except Exception:
                        log.exception("proposal completion callback failed")
            self._stats["applied_entries"] += len(rd.committed)
        for rs in rd.read_states:
            waiters = self._reads_inflight.pop(rs.context, None)
            if waiters:
                heapq.heappush(self._reads_ready, (rs.index, next(self._read_seq), waiters))
        self._serve_reads()

    def _serve_reads(self) -> None:
        ready = self._reads_ready
        while ready and ready[0][0] <= self._applied:
            _, _, waiters = heapq.heappop(ready)
            for f in waiters:
                if not f.done():
                    f.set_result(None)

    def _after_advance(self, core: RaftCore) -> None:
        every = self.config.snapshot_every
        if every and self._applied - self._snapshot_index >= every:
            data = _pack_snapshot(self._addresses, self.sm.snapshot())
            core.compact(self._applied, data)
            self._snapshot_index = self._applied
        if self._snapshot_inflight:  # the transport queued them in order: report them delivered
            for peer in self._snapshot_inflight:
                core.report_snapshot(peer, True)
            self._snapshot_inflight.clear()

    def _on_soft_state(self, leader: NodeId, role: Role) -> None:
        was_leader = self._role == Role.LEADER
        self._leader, self._role = leader, role
        if was_leader and role != Role.LEADER:
            # Queued-but-unproposed reads/proposals would get NotLeader from the core anyway.
            log.info("node %s lost leadership (new leader %s)", self.config.id, leader)
        if self._leader_waiters:
            keep = []
            for want, fut in self._leader_waiters:
                if fut.done():
                    continue
                if want == leader:
                    fut.set_result(None)
                else:
                    keep.append((want, fut))
            self._leader_waiters = keep

    def _restore_snapshot(self, snap: Snapshot) -> None:
        addrs, sm_data = _unpack_snapshot(snap.data)
        self.sm.restore(sm_data)
        members = set(snap.meta.conf.voters) | set(snap.meta.conf.learners)
        for nid, addr in addrs.items():
            if nid in members:
                self._addresses[nid] = addr
        for nid in list(self._addresses):
            if members and nid not in members and nid != self.config.id:
                del self._addresses[nid]
        self._sync_transport_peers()
        # proposals at or below the snapshot index can no longer be matched with their entries
        for index in [i for i in self._pending if i <= snap.meta.index]:
            p = self._pending.pop(index)
            p.done(None, ProposalOutcomeUnknown(f"entry {index} was covered by a snapshot"))
        self._applied = max(self._applied, snap.meta.index)
        self._snapshot_index = max(self._snapshot_index, snap.meta.index)

    def _apply_conf_change(self, e: Entry) -> None:
        cc = decode_conf_change(e.data)
        if cc.type in (ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_VOTER) and cc.context:
            self._addresses[cc.node_id] = decode_address(cc.context)
        elif cc.type == ConfChangeType.REMOVE and cc.node_id != self.config.id:
            self._addresses.pop(cc.node_id, None)
        if cc.type == ConfChangeType.ADD_VOTER:
            for f in self._voter_waiters.pop(cc.node_id, ()):
                if not f.done():
                    f.set_result(None)
        self._sync_transport_peers()
        log.info("node %s applied %s %s at %d", self.config.id, cc.type.name, cc.node_id, e.index)

    def _sync_transport_peers(self) -> None:
        t = self._transport
        if t is None:
            return
        known = self._transport_peers
        want = {p for p in self._addresses if p != self.config.id}
        for p in known - want:
            t.remove_peer(p)
        for p in want:
            t.set_peer(p, self._addresses[p])
        self._transport_peers = want

    # ------------------------------------------------------------------ helpers

    def _election_timeout_s(self) -> float:
        return self.config.tick_interval * self.config.election_ticks

    def _require_core(self) -> RaftCore:
        if self._core is None:
            raise NodeStopped("node not started")
        return self._core

    def _check_running(self) -> None:
        if self._failed is not None:
            raise NodeStopped(f"raft node failed: {self._failed!r}")
        if self._stopping or self._core is None:
            raise NodeStopped("node not running")

    def _fail_all(self, exc: RaftError) -> None:
        dones = [p.done for p in self._pending.values()] + [p.done for _, p in self._proposals]
        futs: list[asyncio.Future[Any]] = list(self._read_waiters)
        futs += [f for ws in self._reads_inflight.values() for f in ws]
        futs += [f for _, _, ws in self._reads_ready for f in ws]
        futs += [f for _, f in self._leader_waiters]
        futs += [f for ws in self._voter_waiters.values() for f in ws]
        self._voter_waiters.clear()
        self._pending.clear()
        self._proposals.clear()
        self._read_waiters.clear()
        self._reads_inflight.clear()
        self._reads_ready.clear()
        self._leader_waiters.clear()
        for f in futs:
            if not f.done():
                f.set_exception(exc)
        for done in dones:
            with contextlib.suppress(Exception):
                done(None, exc)


__all__ = [
    "Address",
    "NodeConfig",
    "NodeStopped",
    "ProposalOutcomeUnknown",
    "ProposalOverwritten",
    "RaftNode",
    "StateMachine",
    "decode_address",
    "encode_address",
    "encode_conf_change",
]
