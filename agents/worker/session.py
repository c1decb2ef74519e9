"""The node's end of the dispatcher session (SwarmKit's ``agent/session.go`` + ``agent/agent.go`` loop).

One long-lived websocket to the leader's ``GET /v1/session`` (protocol: ``agents.manager.dispatcher``),
authenticated by the node certificate; the node id is the certificate's CN. The session:

* tries the known managers in turn, follows ``redirect`` messages to the leader, and after a failure
  waits a jittered, growing backoff (SwarmKit: 100 ms growing to 8 s, a random delay below the bound);
* registers with the node description, then heartbeats every ``heartbeat_period_s`` the manager gave
  it; a manager silent for ``period * grace`` is presumed gone and the session is re-established;
* hands every ``assignments`` message (first a full set, then increments) and every ``managers`` list to
  the callbacks, in order; ``mesh`` messages go to ``on_mesh`` and are acknowledged (``mesh_ack``) once
  applied;
* ``report()`` keeps the latest status of each task: unsent updates survive reconnects and, after any
  reconnect, the latest state of every task is sent again (a new leader may have missed updates the
  old one acknowledged but never committed). An entry is forgotten when its task leaves the assignments.

Kept free of ``labctl`` (and of the manager package beyond the shared PKI helpers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp

from agents.manager.ca import NodeCredentials, RootCA, client_context
from agents.state.objects import Task

log = logging.getLogger(__name__)

SESSION_PATH = "/v1/session"
INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 8.0
MAX_STATUS_BATCH = 500
_MAX_INBOUND = 256 * 1024 * 1024


class ManagerInfo(NamedTuple):
    addr: str
    node_id: str
    leader: bool


@dataclass(frozen=True, slots=True)
class AssignedSecret:
    id: str
    name: str
    data: bytes


@dataclass(slots=True)
class Assignments:
    """One ``assignments`` message. ``full``: replace everything known; else apply as a delta."""

    full: bool
    tasks: list[Task] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    secrets: list[AssignedSecret] = field(default_factory=list)
    removed_secrets: list[str] = field(default_factory=list)


AssignmentsCallback = Callable[[Assignments], Awaitable[None] | None]
ManagersCallback = Callable[[list[ManagerInfo]], Awaitable[None] | None]


class SessionError(Exception):
    """The manager ended the session with an error (unknown node, replaced, too slow...)."""


class _Redirect(Exception):
    def __init__(self, leader: str | None) -> None:
        super().__init__(f"redirected to {leader}")
        self.leader = leader


def _url(addr: str) -> str:
    host, sep, port = addr.rpartition(":")
    if sep and ":" in host and not host.startswith("["):
        host = f"[{host}]"  # bare IPv6 literal
    return f"https://{host}:{port}{SESSION_PATH}" if sep else f"https://{addr}{SESSION_PATH}"


class WorkerSession:
    """Keeps this node registered with the leader. ``start()`` once; ``stop()`` to leave cleanly."""

    def __init__(
        self,
        node_creds: NodeCredentials,
        root_ca: RootCA | bytes | str,
        managers: list[str],
        description: dict[str, Any],
        on_assignments: AssignmentsCallback,
        on_managers: ManagersCallback | None = None,
        *,
        grace_multiplier: int = 3,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        connect_timeout_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if not managers:
            raise ValueError("at least one manager address is needed")
        self.node_creds = node_creds
        self.node_id = node_creds.node_id
        self._ssl: ssl.SSLContext = client_context(node_creds, root_ca)
        self.managers: list[str] = list(dict.fromkeys(managers))
        self.description = description
        self.on_assignments = on_assignments
        self.on_managers = on_managers
        self.on_mesh: Callable[[dict[str, Any]], Awaitable[Any] | Any] | None = None
        """Called with each ``mesh`` and ``mesh_applied`` message (the routing-mesh agent,
        `agents.mesh.agent`); a ``mesh`` message is acknowledged (``mesh_ack``) unless it returns False."""
        self.grace_multiplier = grace_multiplier
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self._rng = rng or random.Random()
        self.connected = False
        self.session_id: str | None = None
        self.heartbeat_period_s = 1.0
        self.leader: str | None = None
        """The manager this session is connected to, or the last leader hint."""
        self.manager_info: list[ManagerInfo] = []
        self.sessions_established = 0
        self._latest: dict[str, dict[str, Any]] = {}
        """Task id -> latest status update reported (re-sent after every reconnect)."""
        self._unsent: dict[str, dict[str, Any]] = {}
        self._unacked: dict[str, int] = {}
        """Task id -> seq of the status message that carried its latest update."""
        self._seq = 0
        self._mesh_ack: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._next: list[str] = []

    # ------------------------------------------------------------------------------------------ public

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._stop_event.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"session-{self.node_id}")

    async def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        ws, task = self._ws, self._task
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        self.connected = False

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected_event.wait()

    def report(self, updates: list[dict[str, Any]]) -> None:
        """Queue task status updates (dicts as in the ``status`` message; ``task_id`` and ``state`` needed).

        A newer update for a task supersedes an unsent older one; ``timestamp`` defaults to now."""
        now = time.time()
        for u in updates:
            tid = u.get("task_id")
            if not isinstance(tid, str):
                raise ValueError("a status update needs a task_id")
            u = dict(u)
            u.setdefault("timestamp", now)
            if isinstance(u.get("state"), str):
                u["state"] = u["state"].lower()
            self._latest[tid] = u
            self._unsent[tid] = u
        if updates:
            self._wake.set()

    @property
    def pending_reports(self) -> int:
        """Updates not yet acknowledged by a manager (unsent or in flight)."""
        return len(self._unsent.keys() | self._unacked.keys())

    # ------------------------------------------------------------------------------------------- loop

    def _candidates(self) -> list[str]:
        if not self._next:
            leaders = [m.addr for m in self.manager_info if m.leader]
            self._next = list(dict.fromkeys([*leaders, *self.managers]))
        return self._next

    async def _run(self) -> None:
        backoff = 0.0
        hops = 0
        while not self._stopping:
            candidates = self._candidates()
            addr = candidates.pop(0)
            established_before = self.sessions_established
            try:
                await self._session(addr)
            except asyncio.CancelledError:
                raise
            except _Redirect as r:
                hops += 1
                log.info("session: %s is not the leader; leader is %s", addr, r.leader)
                if r.leader and r.leader != addr:
                    if r.leader not in self.managers:
                        self.managers.append(r.leader)
                    self._next = [r.leader, *[a for a in self._next if a != r.leader]]
                if hops <= len(self.managers) + 1 and r.leader:
                    continue  # follow the hint at once
            except SessionError as e:
                log.warning("session with %s ended: %s", addr, e)
            except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError, ValueError) as e:
                log.info("session with %s failed: %s: %s", addr, type(e).__name__, e)
            except Exception:
                log.exception("session with %s failed unexpectedly", addr)  # keep trying: never die silently
            finally:
                self._set_disconnected()
            if self._stopping:
                break
            hops = 0
            if self.sessions_established > established_before:
                backoff = 0.0  # it worked: retry promptly, still jittered so a cluster doesn't stampede
                delay = self._rng.uniform(0, self.initial_backoff_s)
            else:
                backoff = min(self.initial_backoff_s + 2 * backoff, self.max_backoff_s)
                delay = self._rng.uniform(0, backoff)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_event.wait()

    def _set_disconnected(self) -> None:
        self.connected = False
        self._connected_event.clear()
        self._ws = None

    async def _session(self, addr: str) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0))
        async with asyncio.timeout(self.connect_timeout_s):
            ws = await self._http.ws_connect(
                _url(addr),
                ssl=self._ssl,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                max_msg_size=_MAX_INBOUND,
                autoping=True,
            )
        async with ws:
            self._ws = ws
            await ws.send_str(json.dumps({"type": "register", "description": self.description}))
            first = await self._receive(ws, self.connect_timeout_s + 10.0)
            if first.get("type") != "session":
                self._handle_terminal(first)
                raise SessionError(f"unexpected first message {first.get('type')!r}")
            self.session_id = first.get("session_id")
            self._set_period(first.get("heartbeat_period_s"))
            self.leader = addr
            self.sessions_established += 1
            # Re-send the latest state of every task: the manager may have missed some.
            self._unsent = dict(self._latest)
            self._unacked.clear()
            self.connected = True
            self._connected_event.set()
            log.info("session %s established with %s", self.session_id, addr)
            writer = asyncio.get_running_loop().create_task(self._writer(ws))
            try:
                while True:
                    if writer.done():
                        writer.result()
                        raise SessionError("writer stopped")
                    msg = await self._receive(ws, self.heartbeat_period_s * self.grace_multiplier + 1.0)
                    await self._dispatch(msg)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
        while True:
            async with asyncio.timeout(timeout):
                raw = await ws.receive()
            if raw.type is aiohttp.WSMsgType.TEXT:
                try:
                    msg = json.loads(raw.data)
                except ValueError:
                    log.info("session: ignoring malformed message")
                    continue
                if isinstance(msg, dict):
                    return msg
                continue
            if raw.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise ConnectionResetError(f"session closed by the manager ({ws.close_code})")
            if raw.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionResetError(f"session error: {ws.exception()}")

    def _handle_terminal(self, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        if t == "redirect":
            leader = msg.get("leader")
            raise _Redirect(leader if isinstance(leader, str) and leader else None)
        if t == "error":
            raise SessionError(str(msg.get("message")))

    def _set_period(self, p: Any) -> None:
        if isinstance(p, int | float) and not isinstance(p, bool) and p > 0:
            self.heartbeat_period_s = float(p)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        if t == "assignments":
            a = _parse_assignments(msg)
            if a.full:
                keep = {task.id for task in a.tasks}
                for tid in [tid for tid in self._latest if tid not in keep]:
                    self._forget(tid)
            for tid in a.removed:
                self._forget(tid)
            await _call(self.on_assignments, a)
        elif t == "managers":
            infos = _parse_managers(msg.get("managers"))
            self.manager_info = infos
            for m in infos:
                if m.addr not in self.managers:
                    self.managers.append(m.addr)
            self._next = []
            if self.on_managers is not None:
                await _call(self.on_managers, infos)
        elif t == "mesh":
            ok = True if self.on_mesh is None else await _call(self.on_mesh, msg) is not False
            if ok and "gen" in msg:
                self._mesh_ack = {"type": "mesh_ack", "stream": msg.get("stream"), "gen": msg["gen"]}
                self._wake.set()
        elif t == "mesh_applied":
            if self.on_mesh is not None:
                await _call(self.on_mesh, msg)
        elif t == "heartbeat":
            self._set_period(msg.get("heartbeat_period_s"))
        elif t == "status_ack":
            seq = msg.get("seq")
            if isinstance(seq, int):
                for tid in [tid for tid, s in self._unacked.items() if s <= seq]:
                    del self._unacked[tid]
        elif t in ("redirect", "error"):
            self._handle_terminal(msg)
        else:
            log.debug("session: ignoring message type %r", t)

    def _forget(self, tid: str) -> None:
        self._latest.pop(tid, None)
        self._unsent.pop(tid, None)
        self._unacked.pop(tid, None)

    async def _writer(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The only writer: heartbeats on time, status batches as they come."""
        next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                await ws.send_str('{"type":"heartbeat"}')
                next_beat = now + self.heartbeat_period_s
            ack, self._mesh_ack = self._mesh_ack, None
            if ack is not None:
                await ws.send_str(json.dumps(ack))
            while self._unsent:
                batch: list[dict[str, Any]] = []
                for tid in list(self._unsent)[:MAX_STATUS_BATCH]:
                    batch.append(self._unsent.pop(tid))
                self._seq += 1
                for u in batch:
                    self._unacked[u["task_id"]] = self._seq
                await ws.send_str(json.dumps({"type": "status", "seq": self._seq, "updates": batch}))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                    await self._wake.wait()


async def _call(fn: Callable[..., Any], arg: Any) -> Any:
    """Run a callback (sync or async) and return its result; its failure is logged (result False),
    never ends the session."""
    try:
        res = fn(arg)
        if inspect.isawaitable(res):
            res = await res
        return res
    except Exception:
        log.exception("session callback %r failed", fn)
        return False


def _parse_assignments(msg: dict[str, Any]) -> Assignments:
    a = Assignments(full=bool(msg.get("full")))
    for d in msg.get("tasks") or []:
        try:
            a.tasks.append(Task.from_dict(d))
        except (ValueError, TypeError) as e:
            log.warning("session: undecodable task in assignments dropped: %s", e)
    a.removed = [x for x in msg.get("removed") or [] if isinstance(x, str)]
    for s in msg.get("secrets") or []:
        try:
            a.secrets.append(
                AssignedSecret(str(s["id"]), str(s.get("name", "")), base64.b64decode(s["data"]))
            )
        except (KeyError, TypeError, ValueError) as e:
            log.warning("session: undecodable secret in assignments dropped: %s", e)
    a.removed_secrets = [x for x in msg.get("removed_secrets") or [] if isinstance(x, str)]
    return a


def _parse_managers(raw: Any) -> list[ManagerInfo]:
    out: list[ManagerInfo] = []
    if isinstance(raw, list):
        for m in raw:
            if isinstance(m, dict) and isinstance(m.get("addr"), str) and m["addr"]:
                out.append(ManagerInfo(m["addr"], str(m.get("node_id", "")), bool(m.get("leader"))))
    return out
