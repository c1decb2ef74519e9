"""The dispatcher: the leader's end of every node's session (SwarmKit's ``manager/dispatcher``).

Each node (workers and managers alike) keeps one websocket open to the leader's control endpoint,
``GET /v1/session`` on ``<advertise>:2377``. The node's identity is the CN of its TLS client certificate
(worker or manager OU, chained to the cluster root); nothing a node *says* can change who it is.

Wire protocol: one JSON object per websocket text frame, discriminated by ``type``.

node -> manager

* ``{"type": "register", "description": {"hostname", "platform": {"os", "architecture"},
  "engine": {"engine_version", "labels"}, "resources": {"nano_cpus", "memory_bytes"}, "addr"}}`` — must
  be the first message. ``addr`` is optional: the node's advertise address; without it the TCP peer
  address is recorded as ``Node.status.addr``.
* ``{"type": "heartbeat"}`` — every ``heartbeat_period_s``.
* ``{"type": "status", "seq": n, "updates": [{"task_id", "state", "message", "err", "exit_code",
  "container_id", "pid", "timestamp"}]}`` — ``state`` is Docker's lowercase name (``"running"``) or the
  numeric ``TaskState``. Answered by ``status_ack``.
* ``{"type": "mesh_ack", "stream", "gen"}`` — the node's routing mesh has programmed that ``mesh`` message.

manager -> node

* ``{"type": "session", "session_id", "node_id", "heartbeat_period_s"}`` — registration accepted.
* ``{"type": "managers", "managers": [{"addr", "node_id", "leader"}]}`` — on connect and on change.
* ``{"type": "assignments", "full": bool, "tasks": [Task.to_dict()], "removed": [task id],
  "secrets": [{"id", "name", "data": base64}], "removed_secrets": [secret id]}`` — ``full`` replaces
  everything the node knew (sent once per session, first); later messages are incremental. A node gets
  its tasks once they are ASSIGNED, again whenever anything but their status changes (desired state
  SHUTDOWN/REMOVE, spec), ``removed`` when they leave the node or the store, and exactly the secrets that
  its not-yet-finished tasks reference (released once no such task is left).
* ``{"type": "heartbeat", "heartbeat_period_s"}`` — answer to each heartbeat (liveness for the node and a
  way to change its period).
* ``{"type": "status_ack", "seq", "accepted", "dropped"}`` — the status batch was validated and queued.
* ``{"type": "redirect", "leader": addr | null, "message"}`` — this manager is not (or no longer) the
  leader's dispatcher; reconnect to ``leader`` (or to another manager when null). Then the socket closes.
* ``{"type": "mesh", "full": bool, "services": [...], "removed": [service id], "networks": [...],
  "nodes": [...]}`` — the routing-mesh table (`agents.mesh.table`): ``full`` once per session after the
  first assignments, then deltas at most every ~20 ms while services, tasks, networks or nodes change;
  each carries the publisher's ``stream`` and ``gen`` (`agents.mesh.publisher`).
* ``{"type": "mesh_applied", "stream", "gen"}`` — every session has acknowledged ``gen`` (so no node
  balances connections to a task that message removed).
* ``{"type": "error", "message"}`` — fatal for the session (node unknown, session replaced, too slow...);
  the socket closes and the node reconnects with backoff.

Semantics follow SwarmKit. Heartbeats never touch Raft: each registered node has an in-memory deadline;
a node silent for ``period * grace`` is committed DOWN (``heartbeat failure``) and its session closed.
When a manager becomes leader, every node not already down is committed UNKNOWN and given twice that
grace to reconnect, so a leader change doesn't flap the whole cluster to down. Registrations, node
state changes and task status reports are batched into changesets (every ``flush_interval_s`` or
``max_batch`` updates); a batch the store rejects (a concurrent write raced it) is split and rebuilt
against fresh state until the bad update is isolated and dropped. Outbound traffic per session is
bounded: assignment changes coalesce per task (latest wins), other messages go through a small queue,
and a node that can't keep up (queue full or one send blocked past ``send_timeout_s``) is disconnected;
it reconnects and gets a fresh full set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import random
import secrets as _secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from agents.manager.ca import PermissionDeniedError, Role, identity_of, peer_certificate
from agents.manager.loop import Committer, ControlLoop
from agents.mesh.publisher import MeshPublisher
from agents.state.errors import StoreError
from agents.state.objects import (
    SECOND,
    Cluster,
    ContainerStatus,
    Network,
    Node,
    NodeDescription,
    NodeState,
    Secret,
    Service,
    Task,
    TaskState,
    TaskStatus,
)
from agents.state.store import Store
from agents.state.watch import Event, EventAction

log = logging.getLogger(__name__)

SESSION_PATH = "/v1/session"

CLOSE_REDIRECT = 4001
CLOSE_ERROR = 4000
CLOSE_NODE_NOT_FOUND = 4004
CLOSE_SLOW = 4008
CLOSE_REPLACED = 4009
CLOSE_EXPIRED = 4010

MSG_HEARTBEAT_DOWN = "heartbeat failure"
MSG_HEARTBEAT_DOWN_UNKNOWN = 'heartbeat failure for node in "unknown" state'
MSG_UNKNOWN = 'Node moved to "unknown" state due to leadership change in cluster'

WORKER_STATES = frozenset(s for s in TaskState if TaskState.ACCEPTED <= s <= TaskState.REJECTED)
"""What a node may report: from ACCEPTED up to the terminal states it can observe (COMPLETE, SHUTDOWN,
FAILED, REJECTED). NEW..ASSIGNED are the manager's, REMOVE and ORPHANED the reaper's."""

_STATE_BY_NAME = {s.name.lower(): s for s in TaskState}
_STABLE_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(Task) if f.name not in ("meta", "status"))
_MAX_INBOUND = 4 * 1024 * 1024
_SAME = TaskStatus(message="<identical re-send>")
"""Sentinel from status validation: the update equals what is stored (accepted, nothing to write)."""


def _tasks_equal_stable(a: Task, b: Task) -> bool:
    """Equal except status and meta (SwarmKit's ``TasksEqualStable``): a status echo need not be resent."""
    return all(getattr(a, f) == getattr(b, f) for f in _STABLE_TASK_FIELDS)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return base64.b64encode(o).decode()
    raise TypeError(f"cannot encode {type(o).__name__}")


def _secret_dict(s: Secret) -> dict[str, Any]:
    return {"id": s.id, "name": s.spec.name, "data": base64.b64encode(s.spec.data).decode()}


# ------------------------------------------------------------------------------------------ bookkeeping


@dataclass
class DispatcherStats:
    """Counters for tests, metrics and ``docker info``-style diagnostics."""

    sessions_opened: int = 0
    sessions_rejected: int = 0
    redirects: int = 0
    slow_disconnects: int = 0
    heartbeat_expiries: int = 0
    status_received: int = 0
    status_dropped: int = 0
    status_committed: int = 0
    node_updates_committed: int = 0
    batches: int = 0
    batches_split: int = 0


@dataclass(slots=True)
class _NodeUpdate:
    state: NodeState
    message: str = ""
    addr: str = ""
    description: NodeDescription | None = None


class _Registered:
    """A node the dispatcher expects heartbeats from (registered, or UNKNOWN after a leader change)."""

    __slots__ = ("handle", "last", "node_id", "session", "timeout", "unknown")

    def __init__(self, node_id: str, timeout: float, unknown: bool) -> None:
        self.node_id = node_id
        self.timeout = timeout
        self.unknown = unknown
        self.last = time.monotonic()
        self.handle: asyncio.TimerHandle | None = None
        self.session: _Session | None = None


class _Session:
    """One node's live websocket: the assignment set it was sent and a bounded outbound pipeline."""

    def __init__(
        self, d: Dispatcher, node_id: str, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> None:
        self.d = d
        self.node_id = node_id
        self.id = _secrets.token_hex(12)
        self.ws = ws
        self.transport = transport
        self.tasks: dict[str, Task] = {}
        """Tasks the node has been sent (latest version seen)."""
        self.secret_refs: dict[str, set[str]] = {}
        """Secret id -> ids of this node's unfinished tasks referencing it."""
        self.sent_secrets: set[str] = set()
        self.pending_tasks: dict[str, Task | None] = {}
        self.pending_secrets: dict[str, Secret | None] = {}
        self.outbox: deque[str] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.close_reason = ""
        self.sender: asyncio.Task[None] | None = None

    # -------------------------------------------------------------------------------- assignment set

    def task_changed(self, t: Task, gone: bool) -> None:
        """Fold one task event into the pending changes (SwarmKit's ``assignmentSet``)."""
        known = self.tasks.get(t.id)
        if gone or t.node_id != self.node_id:
            if known is not None:
                del self.tasks[t.id]
                self.pending_tasks[t.id] = None
                self._release(known)
            self._nudge()
            return
        if t.status.state < TaskState.ASSIGNED:
            return
        if known is not None:
            if t.status.state > TaskState.ASSIGNED and _tasks_equal_stable(known, t):
                self.tasks[t.id] = t  # only the status moved: the node already knows
                if t.status.state > TaskState.RUNNING:
                    self._release(t)
                    self._nudge()
                return
        elif t.status.state <= TaskState.RUNNING:
            self._acquire(t)
        self.tasks[t.id] = t
        self.pending_tasks[t.id] = t
        if t.status.state > TaskState.RUNNING:
            self._release(t)
        self._nudge()

    def secret_changed(self, s: Secret, gone: bool) -> None:
        if s.id not in self.secret_refs:
            return
        if gone:
            return  # tasks still reference it; the node keeps what it has (Docker forbids this case)
        self.sent_secrets.add(s.id)
        self.pending_secrets[s.id] = s
        self._nudge()

    def _acquire(self, t: Task) -> None:
        for ref in t.spec.container.secrets:
            sid = ref.secret_id
            users = self.secret_refs.get(sid)
            if users is None:
                users = self.secret_refs[sid] = set()
            users.add(t.id)
            if sid not in self.sent_secrets:
                s = self.d.store.get(Secret, sid)
                if s is not None:
                    self.sent_secrets.add(sid)
                    self.pending_secrets[sid] = s

    def _release(self, t: Task) -> None:
        for ref in t.spec.container.secrets:
            sid = ref.secret_id
            users = self.secret_refs.get(sid)
            if users is None:
                continue
            users.discard(t.id)
            if not users:
                del self.secret_refs[sid]
                if sid in self.sent_secrets:
                    self.sent_secrets.discard(sid)
                    self.pending_secrets[sid] = None

    def _nudge(self) -> None:
        if self.pending_tasks or self.pending_secrets:
            self.wake.set()

    def take_assignments(self, full: bool) -> str:
        tasks = [t.to_dict() for t in self.pending_tasks.values() if t is not None]
        removed = [tid for tid, t in self.pending_tasks.items() if t is None]
        secrets = [_secret_dict(s) for s in self.pending_secrets.values() if s is not None]
        removed_secrets = [sid for sid, s in self.pending_secrets.items() if s is None]
        self.pending_tasks = {}
        self.pending_secrets = {}
        return _dumps(
            {
                "type": "assignments",
                "full": full,
                "tasks": tasks,
                "removed": [] if full else removed,
                "secrets": secrets,
                "removed_secrets": [] if full else removed_secrets,
            }
        )

    # ---------------------------------------------------------------------------------------- output

    def send(self, msg: dict[str, Any]) -> None:
        """Queue a message; a node that lets the queue fill up is cut off (it reconnects for a full set)."""
        if self.closed:
            return
        if len(self.outbox) >= self.d.max_outbound:
            self.d.stats.slow_disconnects += 1
            log.warning("node %s: outbound queue full, disconnecting slow session", self.node_id)
            self.abort("slow consumer")
            return
        self.outbox.append(_dumps(msg))
        self.wake.set()

    async def run_sender(self) -> None:
        """The only writer on the socket: queued messages first, then coalesced assignment changes."""
        ws, timeout = self.ws, self.d.send_timeout_s
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                while not self.closed:
                    if self.outbox:
                        data = self.outbox.popleft()
                    elif self.pending_tasks or self.pending_secrets:
                        data = self.take_assignments(full=False)
                    else:
                        break
                    try:
                        await asyncio.wait_for(ws.send_str(data), timeout)
                    except TimeoutError:
                        self.d.stats.slow_disconnects += 1
                        log.warning(
                            "node %s: send blocked %.1fs, disconnecting slow session", self.node_id, timeout
                        )
                        self.abort("slow consumer")
                        return
        except (ConnectionError, RuntimeError) as e:
            log.debug("node %s: send failed: %s", self.node_id, e)
            self.abort("send failed")

    def abort(self, reason: str) -> None:
        """Drop the connection at once (no close handshake: the peer may not be reading)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.wake.set()
        if self.transport is not None:
            self.transport.abort()

    async def close(
        self, reason: str, code: int, last: dict[str, Any] | None = None, error: bool = True
    ) -> None:
        """Tell the node why (``last``, else an error message; best effort, bounded) and close."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.wake.set()
        if last is None and error:
            last = {"type": "error", "message": reason}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                if last is not None:
                    await self.ws.send_str(_dumps(last))
                await self.ws.close(code=code, message=reason.encode()[:120])
        if self.transport is not None and not self.ws.closed:
            self.transport.abort()


# -------------------------------------------------------------------------------------------- dispatcher


class Dispatcher(ControlLoop):
    """Leader-only: node sessions, heartbeats, assignments and status reports. See the module docstring.

    Mount the routes on the control-plane app once (``add_routes``); ``start()`` when this manager becomes
    leader, ``stop()`` when it stops being one. While not running, the endpoint redirects to the leader.
    """

    name = "dispatcher"

    def __init__(
        self,
        store: Store,
        committer: Committer,
        *,
        is_leader: Callable[[], bool],
        leader_address: Callable[[], str | None],
        heartbeat_period_s: float | None = None,
        grace_multiplier: int = 3,
        heartbeat_jitter: float = 0.0,
        managers: Callable[[], list[dict[str, Any]]] | None = None,
        cluster_id: str | None = None,
        flush_interval_s: float = 0.05,
        max_batch: int = 500,
        max_outbound: int = 256,
        send_timeout_s: float | None = None,
        register_timeout_s: float = 10.0,
    ) -> None:
        """``heartbeat_period_s=None`` follows ``Cluster.spec.dispatcher.heartbeat_period`` (default 1 s).
        ``heartbeat_jitter`` spreads nodes' periods by up to that fraction (SwarmKit's epsilon).
        ``managers`` overrides the manager list sent to nodes (default: nodes with a manager status, and
        ``leader_address()`` as the leader). ``cluster_id`` pins the organization of client
        certificates; their chain needs no second check: the control port's TLS context trusts only the
        cluster root, and OpenSSL refuses a certificate that does not verify even where one is optional."""
        super().__init__(store, committer)
        self.is_leader = is_leader
        self.leader_address = leader_address
        self._fixed_period = heartbeat_period_s
        self.grace_multiplier = grace_multiplier
        self.heartbeat_jitter = heartbeat_jitter
        self._managers_provider = managers
        self.cluster_id = cluster_id
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_outbound = max_outbound
        self._send_timeout_s = send_timeout_s
        self.register_timeout_s = register_timeout_s
        self.stats = DispatcherStats()
        self._sessions: dict[str, _Session] = {}
        self._registered: dict[str, _Registered] = {}
        self._task_updates: dict[str, tuple[str, TaskStatus]] = {}
        self._node_updates: dict[str, _NodeUpdate] = {}
        self._node_waiters: dict[str, list[asyncio.Future[bool]]] = {}
        self._flush_now = asyncio.Event()
        self._ready = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._managers: list[dict[str, Any]] = []
        self._rng = random.Random()
        self.mesh = MeshPublisher(store, self._broadcast_mesh,
                                  members=lambda: [s.id for s in self._sessions.values()])
        """Routing-mesh table pushed to every node (issue 7)."""

    # ----------------------------------------------------------------------------------------- config

    @property
    def heartbeat_period_s(self) -> float:
        if self._fixed_period is not None:
            return self._fixed_period
        for c in self.store.list(Cluster):
            if c.spec.dispatcher.heartbeat_period > 0:
                return c.spec.dispatcher.heartbeat_period / SECOND
        return 1.0

    @property
    def send_timeout_s(self) -> float:
        if self._send_timeout_s is not None:
            return self._send_timeout_s
        return max(5.0, self.heartbeat_period_s * self.grace_multiplier)

    def _node_period(self) -> float:
        p = self.heartbeat_period_s
        return p * (1.0 + self._rng.uniform(0.0, self.heartbeat_jitter)) if self.heartbeat_jitter else p

    def _leader(self) -> str | None:
        try:
            return self.leader_address()
        except Exception:
            log.exception("dispatcher: leader_address() failed")
            return None

    @property
    def accepting(self) -> bool:
        return self.running and self._ready.is_set()

    def session_count(self) -> int:
        return len(self._sessions)

    def has_session(self, node_id: str) -> bool:
        return node_id in self._sessions

    def pending_outbound(self) -> int:
        """Queued messages plus coalesced changes over all sessions (to check that memory stays bounded)."""
        return sum(
            len(s.outbox) + len(s.pending_tasks) + len(s.pending_secrets) for s in self._sessions.values()
        )

    # ----------------------------------------------------------------------------------------- routes

    def routes(self) -> list[web.RouteDef]:
        return [web.get(SESSION_PATH, self.handle_session)]

    def add_routes(self, app: web.Application) -> None:
        app.add_routes(self.routes())

    # ------------------------------------------------------------------------------------------- life

    async def run(self) -> None:
        """Leader start: mark nodes unknown, then batch updates until stopped."""
        self._ready.clear()
        self._unsubscribe = self.store.subscribe(
            self._on_events, kinds=(Task, Secret, Node, Cluster, Service, Network), on_reset=self._on_reset
        )
        self.mesh.reset()
        try:
            await self._mark_nodes_unknown()
            self._managers = self._compute_managers()
            self._ready.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._flush_now.wait()
                self._flush_now.clear()
                await self._flush()
        finally:
            self._ready.clear()

    async def stop(self) -> None:
        """Leadership lost (or shutdown): close every session, forget heartbeats, flush what is queued."""
        await super().stop()
        self.mesh.reset()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for reg in self._registered.values():
            if reg.handle is not None:
                reg.handle.cancel()
        self._registered.clear()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(
            *(s.close("dispatcher stopped", 1001, error=False) for s in sessions), return_exceptions=True
        )
        with contextlib.suppress(Exception):
            await self._flush()
        for waiters in self._node_waiters.values():
            for w in waiters:
                if not w.done():
                    w.set_result(False)
        self._node_waiters.clear()

    async def _mark_nodes_unknown(self) -> None:
        """A new leader knows nothing of heartbeats: give every live node a double grace to reconnect."""
        timeout = self.heartbeat_period_s * self.grace_multiplier * 2
        ids: list[str] = []
        for n in self.store.list(Node):
            if n.status.state == NodeState.DOWN:
                continue
            ids.append(n.id)
            self._node_updates[n.id] = _NodeUpdate(NodeState.UNKNOWN, MSG_UNKNOWN)
            reg = _Registered(n.id, timeout, unknown=True)
            self._registered[n.id] = reg
            self._arm(reg)
        if ids:
            log.info("dispatcher: %d nodes moved to unknown pending reconnection", len(ids))
            await self._flush()

    # ------------------------------------------------------------------------------------- heartbeats

    def _arm(self, reg: _Registered) -> None:
        loop = asyncio.get_running_loop()
        reg.handle = loop.call_at(loop.time() + reg.timeout, self._check_expiry, reg)

    def _check_expiry(self, reg: _Registered) -> None:
        """Lazy timer: heartbeats only move ``last``; the timer re-arms for what is left."""
        if self._registered.get(reg.node_id) is not reg:
            return
        left = reg.last + reg.timeout - time.monotonic()
        if left > 0.001:
            loop = asyncio.get_running_loop()
            reg.handle = loop.call_at(loop.time() + left, self._check_expiry, reg)
            return
        del self._registered[reg.node_id]
        self.stats.heartbeat_expiries += 1
        msg = MSG_HEARTBEAT_DOWN_UNKNOWN if reg.unknown else MSG_HEARTBEAT_DOWN
        log.info("node %s: %s", reg.node_id, msg)
        self._queue_node(reg.node_id, _NodeUpdate(NodeState.DOWN, msg))
        s = self._sessions.get(reg.node_id)
        if s is not None:
            self._drop_session(s)
            asyncio.get_running_loop().create_task(s.close("heartbeat expired", CLOSE_EXPIRED))

    def _beat(self, node_id: str, session: _Session) -> bool:
        reg = self._registered.get(node_id)
        if reg is None or reg.session is not session:
            return False
        reg.last = time.monotonic()
        return True

    # ----------------------------------------------------------------------------------------- batching

    def _queue_node(self, node_id: str, upd: _NodeUpdate) -> None:
        prev = self._node_updates.get(node_id)
        if upd.description is None and prev is not None and prev.description is not None:
            upd.description = prev.description  # keep a description a later state change would drop
            upd.addr = upd.addr or prev.addr
        self._node_updates[node_id] = upd
        if len(self._node_updates) + len(self._task_updates) >= self.max_batch:
            self._flush_now.set()

    async def _node_committed(self, node_id: str) -> bool:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._node_waiters.setdefault(node_id, []).append(fut)
        return await fut

    async def _flush(self) -> None:
        tasks, self._task_updates = self._task_updates, {}
        nodes, self._node_updates = self._node_updates, {}
        waiters, self._node_waiters = self._node_waiters, {}
        if not tasks and not nodes:
            for ws in waiters.values():
                for w in ws:
                    if not w.done():
                        w.set_result(False)
            return
        items: list[tuple[str, str, Any]] = [("n", nid, u) for nid, u in nodes.items()]
        items.extend(("t", tid, u) for tid, u in tasks.items())
        ok_ids: set[str] = set()
        for i in range(0, len(items), self.max_batch):
            if i:
                await asyncio.sleep(0)  # let sessions breathe between large chunks
            try:
                await self._commit_items(items[i : i + self.max_batch], ok_ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher: committing %d updates failed", len(items[i : i + self.max_batch]))
        for nid, ws in waiters.items():
            ok = nid in ok_ids
            for w in ws:
                if not w.done():
                    w.set_result(ok)

    async def _commit_items(self, items: list[tuple[str, str, Any]], ok_ids: set[str]) -> None:
        """Build against current state and commit; on rejection split in halves (each rebuilt fresh)."""
        with self.store.batch() as tx:
            built: list[tuple[str, str, Any]] = []
            for item in items:
                kind, oid, upd = item
                try:
                    if self._build(tx, kind, oid, upd):
                        built.append(item)
                    elif kind == "n":
                        ok_ids.add(oid)  # nothing to change counts as done
                except StoreError as e:
                    log.debug("dispatcher: dropped update of %s: %s", oid, e)
                    if kind == "t":
                        self.stats.status_dropped += 1
        assert tx.changeset is not None
        if not tx.changeset.ops:
            return
        result = await self.committer.commit(tx.changeset)
        self.stats.batches += 1
        if result.ok:
            for kind, oid, _ in built:
                if kind == "n":
                    ok_ids.add(oid)
                    self.stats.node_updates_committed += 1
                else:
                    self.stats.status_committed += 1
            return
        if len(built) == 1:
            log.info("dispatcher: update of %s rejected: %s", built[0][1], result.error)
            if built[0][0] == "t":
                self.stats.status_dropped += 1
            return
        self.stats.batches_split += 1
        half = len(built) // 2
        await self._commit_items(built[:half], ok_ids)
        await self._commit_items(built[half:], ok_ids)

    def _build(self, tx: Any, kind: str, oid: str, upd: Any) -> bool:
        if kind == "n":
            u: _NodeUpdate = upd
            node = tx.get(Node, oid)
            if node is None:
                return False
            n = node.copy()
            n.status.state = u.state
            n.status.message = u.message
            if u.addr:
                n.status.addr = u.addr
            if u.description is not None:
                desc = u.description.copy()
                desc.tls_info = n.description.tls_info  # the manager's, never the node's say
                n.description = desc
            if n.status == node.status and n.description == node.description:
                return False
            tx.update(n)
            return True
        node_id, status = upd
        task = tx.get(Task, oid)
        if task is None or task.node_id != node_id:
            self.stats.status_dropped += 1
            return False
        if status.state < task.status.state or status == task.status:
            return False
        t = task.copy()
        t.status = status
        tx.update(t)
        return True

    # ------------------------------------------------------------------------------------ store events

    def _broadcast_mesh(self, msg: dict[str, Any]) -> None:
        for s in list(self._sessions.values()):
            s.send(msg)

    def _on_events(self, events: list[Event]) -> None:
        sessions = self._sessions
        self.mesh.on_events(e.kind for e in events)
        managers_dirty = False
        for e in events:
            kind = e.kind
            if kind == Task.KIND:
                t: Task = e.obj  # type: ignore[assignment]
                gone = e.action is EventAction.REMOVED
                s = sessions.get(t.node_id) if t.node_id else None
                if s is not None:
                    s.task_changed(t, gone)
                old = e.old
                if old is not None and old.node_id != t.node_id:  # type: ignore[attr-defined]
                    s2 = sessions.get(old.node_id)  # type: ignore[attr-defined]
                    if s2 is not None:
                        s2.task_changed(t, True)
            elif kind == Secret.KIND:
                for s in sessions.values():
                    s.secret_changed(e.obj, e.action is EventAction.REMOVED)  # type: ignore[arg-type]
            elif kind == Node.KIND:
                n: Node = e.obj  # type: ignore[assignment]
                if e.action is EventAction.REMOVED:
                    reg = self._registered.pop(n.id, None)
                    if reg is not None and reg.handle is not None:
                        reg.handle.cancel()
                    s = sessions.get(n.id)
                    if s is not None:
                        self._drop_session(s)
                        asyncio.get_running_loop().create_task(
                            s.close("node removed from the swarm", CLOSE_ERROR)
                        )
                old_ms = e.old.manager_status if e.old is not None else None  # type: ignore[attr-defined]
                if n.manager_status != old_ms or (
                    n.manager_status is not None and e.action is not EventAction.UPDATED
                ):
                    managers_dirty = True
        if managers_dirty and self._ready.is_set():
            self.managers_changed()

    def _on_reset(self) -> None:
        """A snapshot replaced the store: the sessions' views are stale; make every node resync."""
        self.mesh.reset()
        for s in list(self._sessions.values()):
            self._drop_session(s)
            asyncio.get_running_loop().create_task(s.close("state reset", CLOSE_ERROR))

    # --------------------------------------------------------------------------------------- managers

    def _compute_managers(self) -> list[dict[str, Any]]:
        if self._managers_provider is not None:
            return list(self._managers_provider())
        leader = self._leader()
        out: list[dict[str, Any]] = []
        for n in self.store.list(Node):
            ms = n.manager_status
            if ms is None or not ms.addr:
                continue
            out.append(
                {"addr": ms.addr, "node_id": n.id, "leader": ms.addr == leader if leader else ms.leader}
            )
        if leader and not any(m["addr"] == leader for m in out):
            out.insert(0, {"addr": leader, "node_id": "", "leader": True})
        out.sort(key=lambda m: (not m["leader"], m["addr"]))
        return out

    def managers_changed(self) -> None:
        """Recompute the manager list and push it to every node if it changed (call on membership changes)."""
        new = self._compute_managers()
        if new == self._managers:
            return
        self._managers = new
        msg = {"type": "managers", "managers": new}
        for s in list(self._sessions.values()):
            s.send(msg)

    # ---------------------------------------------------------------------------------------- sessions

    def _authenticate(self, request: web.Request) -> str:
        """The node id from the client certificate's CN; a manager or worker certificate of our cluster.

        The certificate was verified against the cluster root during the TLS handshake (see __init__)."""
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_obj is None:
            raise PermissionDeniedError("request is not using TLS")
        cert = peer_certificate(ssl_obj)
        if cert is None:
            raise PermissionDeniedError("no client certificates in request")
        ident = identity_of(cert)
        if ident.role not in (Role.WORKER, Role.MANAGER):
            raise PermissionDeniedError("remote certificate not part of OUs: [swarm-manager swarm-worker]")
        if self.cluster_id is not None and ident.cluster_id != self.cluster_id:
            raise PermissionDeniedError(f"remote certificate not part of organization: {self.cluster_id}")
        return ident.node_id

    async def handle_session(self, request: web.Request) -> web.StreamResponse:
        try:
            node_id = self._authenticate(request)
        except (PermissionDeniedError, ValueError) as e:
            self.stats.sessions_rejected += 1
            desc = e.desc if isinstance(e, PermissionDeniedError) else str(e)
            return web.json_response({"message": f"Permission denied: {desc}"}, status=403)
        ws = web.WebSocketResponse(max_msg_size=_MAX_INBOUND, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.json_response({"message": "websocket upgrade required"}, status=400)
        transport = request.transport
        assert transport is None or isinstance(transport, asyncio.Transport)
        await ws.prepare(request)
        if not self._ready.is_set() and self.running and self.is_leader():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.register_timeout_s):
                    await self._ready.wait()
        if not self.accepting or not self.is_leader():
            self.stats.redirects += 1
            leader = self._leader()
            with contextlib.suppress(Exception):
                await ws.send_str(
                    _dumps(
                        {"type": "redirect", "leader": leader, "message": "this manager is not the leader"}
                    )
                )
                await ws.close(code=CLOSE_REDIRECT, message=b"not the leader")
            return ws
        try:
            await self._serve(node_id, ws, transport, request)
        except ConnectionError:
            pass
        finally:
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _reject(
        self, ws: web.WebSocketResponse, message: str, code: int = CLOSE_ERROR, redirect: bool = False
    ) -> None:
        self.stats.sessions_rejected += 1
        if redirect:
            msg = {"type": "redirect", "leader": self._leader(), "message": message}
        else:
            msg = {"type": "error", "message": message}
        with contextlib.suppress(Exception):
            await ws.send_str(_dumps(msg))
            await ws.close(code=code, message=message.encode()[:120])

    async def _serve(
        self,
        node_id: str,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        request: web.Request,
    ) -> None:
        try:
            async with asyncio.timeout(self.register_timeout_s):
                first = await ws.receive()
        except TimeoutError:
            await self._reject(ws, "no register message")
            return
        msg = _parse(first)
        if msg is None or msg.get("type") != "register":
            await self._reject(ws, "expected a register message")
            return
        if self.store.get(Node, node_id) is None:
            await self._reject(ws, f"node {node_id} not found", CLOSE_NODE_NOT_FOUND)
            return
        try:
            desc_in = msg.get("description") or {}
            if not isinstance(desc_in, dict):
                raise ValueError("description must be an object")
            description = NodeDescription.from_dict(desc_in)
            addr = desc_in.get("addr") or ""
            if not isinstance(addr, str):
                raise ValueError("addr must be a string")
        except ValueError as e:
            await self._reject(ws, f"invalid node description: {e}")
            return
        if not addr:
            peer = transport.get_extra_info("peername") if transport is not None else None
            addr = peer[0] if isinstance(peer, tuple) and peer else (request.remote or "")

        if not self.accepting or not self.is_leader():
            self.stats.redirects += 1
            await self._reject(ws, "leadership changed", CLOSE_REDIRECT, redirect=True)
            return
        self._queue_node(node_id, _NodeUpdate(NodeState.READY, "", addr, description))
        committed = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.register_timeout_s):
                committed = await self._node_committed(node_id)
        if not committed or not self.accepting:
            await self._reject(ws, "registration could not be committed")
            return

        session = _Session(self, node_id, ws, transport)
        old = self._sessions.get(node_id)
        if old is not None:
            self._drop_session(old)
            asyncio.get_running_loop().create_task(
                old.close("session replaced by a newer one", CLOSE_REPLACED)
            )
        period = self._node_period()
        reg = self._registered.get(node_id)
        if reg is not None and reg.handle is not None:
            reg.handle.cancel()
        reg = _Registered(node_id, period * self.grace_multiplier, unknown=False)
        reg.session = session
        self._registered[node_id] = reg
        self._arm(reg)
        # Atomically (no await): install the session, so store events reach it, and take the full set.
        self._sessions[node_id] = session
        for t in self.store.tasks_by_node(node_id):
            session.task_changed(t, False)
        session.outbox.append(
            _dumps(
                {
                    "type": "session",
                    "session_id": session.id,
                    "node_id": node_id,
                    "heartbeat_period_s": period,
                }
            )
        )
        session.outbox.append(_dumps({"type": "managers", "managers": self._managers}))
        session.outbox.append(session.take_assignments(full=True))
        session.outbox.append(_dumps(self.mesh.full_message()))
        session.wake.set()
        self.stats.sessions_opened += 1
        log.info("node %s registered (session %s, addr %s)", node_id, session.id, addr)
        session.sender = asyncio.get_running_loop().create_task(
            session.run_sender(), name=f"session-{node_id}"
        )
        try:
            await self._receive_loop(session, period)
        finally:
            session.closed = True
            session.wake.set()
            self._drop_session(session)
            if session.sender is not None and not session.sender.done():
                session.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await session.sender

    def _drop_session(self, s: _Session) -> None:
        if self._sessions.get(s.node_id) is s:
            del self._sessions[s.node_id]
            self.mesh.check()  # the slowest node to apply the mesh may have been this one
        reg = self._registered.get(s.node_id)
        if reg is not None and reg.session is s:
            reg.session = None  # heartbeat deadline keeps running: the node has until then to come back

    async def _receive_loop(self, s: _Session, period: float) -> None:
        ws = s.ws
        while not s.closed:
            raw = await ws.receive()
            if raw.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if s.closed:
                return
            if not self.is_leader():
                self.stats.redirects += 1
                redirect = {"type": "redirect", "leader": self._leader(), "message": "leadership changed"}
                await s.close("not the leader", CLOSE_REDIRECT, redirect)
                return
            msg = _parse(raw)
            if msg is None:
                log.info("node %s: ignoring malformed message", s.node_id)
                continue
            mtype = msg.get("type")
            if mtype == "heartbeat":
                if not self._beat(s.node_id, s):
                    return
                s.send({"type": "heartbeat", "heartbeat_period_s": period})
            elif mtype == "status":
                self._beat(s.node_id, s)  # any traffic proves the node alive
                accepted, dropped = self._on_status(s.node_id, msg.get("updates"))
                s.send(
                    {"type": "status_ack", "seq": msg.get("seq"), "accepted": accepted, "dropped": dropped}
                )
            elif mtype == "mesh_ack":
                self.mesh.ack(s.id, msg.get("stream"), msg.get("gen"))
            else:
                log.info("node %s: ignoring message of type %r", s.node_id, mtype)

    # ---------------------------------------------------------------------------------------- status

    def _on_status(self, node_id: str, updates: Any) -> tuple[int, int]:
        if not isinstance(updates, list):
            return 0, 0
        accepted = dropped = 0
        for u in updates:
            self.stats.status_received += 1
            status = self._validate(node_id, u)
            if status is None:
                dropped += 1
                self.stats.status_dropped += 1
                continue
            if status is _SAME:
                accepted += 1
                continue
            tid = u["task_id"]
            prev = self._task_updates.get(tid)
            if prev is not None and prev[1].state > status.state:
                continue  # never let a later message move the queued state backwards
            self._task_updates[tid] = (node_id, status)
            accepted += 1
        if len(self._task_updates) + len(self._node_updates) >= self.max_batch:
            self._flush_now.set()
        return accepted, dropped

    def _validate(self, node_id: str, u: Any) -> TaskStatus | None:
        """A well-formed update for one of this node's tasks that moves it forward, ``_SAME`` for a harmless
        re-send of the stored status, or None (logged)."""
        if not isinstance(u, dict) or not isinstance(u.get("task_id"), str):
            log.info("node %s: malformed status update dropped", node_id)
            return None
        tid = u["task_id"]
        try:
            state = _parse_state(u.get("state"))
            message, err = u.get("message", ""), u.get("err", "")
            if not isinstance(message, str) or not isinstance(err, str):
                raise ValueError("message/err must be strings")
            exit_code, pid, cid = u.get("exit_code"), u.get("pid"), u.get("container_id")
            for v in (exit_code, pid):
                if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                    raise ValueError("exit_code/pid must be integers")
            if cid is not None and not isinstance(cid, str):
                raise ValueError("container_id must be a string")
            ts = u.get("timestamp")
            if ts is not None and (not isinstance(ts, int | float) or isinstance(ts, bool)):
                raise ValueError("timestamp must be a number")
        except ValueError as e:
            log.info("node %s: status update for task %s dropped: %s", node_id, tid, e)
            return None
        task = self.store.get(Task, tid)
        if task is None:
            log.debug("node %s: status for unknown task %s dropped", node_id, tid)
            return None
        if task.node_id != node_id:
            log.warning("node %s: cannot update task %s not assigned to this node", node_id, tid)
            return None
        if state not in WORKER_STATES:
            log.info("node %s: task %s: a node cannot report state %s", node_id, tid, state)
            return None
        if state < task.status.state:
            log.debug(
                "node %s: task %s: stale status %s < %s ignored", node_id, tid, state, task.status.state
            )
            return None
        if not state.is_terminal and task.desired_state >= TaskState.ASSIGNED and state > task.desired_state:
            log.info(
                "node %s: task %s: %s is beyond desired state %s", node_id, tid, state, task.desired_state
            )
            return None
        cs = None
        if exit_code is not None or pid is not None or cid is not None:
            cs = ContainerStatus(container_id=cid or "", pid=pid or 0, exit_code=exit_code or 0)
        elif task.status.container_status is not None:
            cs = task.status.container_status.copy()
        status = TaskStatus(
            timestamp=float(ts) if ts is not None else time.time(),
            state=state,
            message=message,
            err=err,
            container_status=cs,
            port_status=task.status.port_status.copy() if task.status.port_status is not None else None,
        )
        if state == task.status.state and (message, err, cs) == (
            task.status.message,
            task.status.err,
            task.status.container_status,
        ):
            return _SAME  # identical re-send (e.g. after a reconnect): nothing to write
        return status


def _parse(raw: Any) -> dict[str, Any] | None:
    if raw.type is not WSMsgType.TEXT:
        return None
    try:
        msg = json.loads(raw.data)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def _parse_state(v: Any) -> TaskState:
    if isinstance(v, str):
        s = _STATE_BY_NAME.get(v.lower())
        if s is not None:
            return s
    elif isinstance(v, int) and not isinstance(v, bool):
        try:
            return TaskState(v)
        except ValueError:
            pass
    raise ValueError(f"unknown task state {v!r}")
