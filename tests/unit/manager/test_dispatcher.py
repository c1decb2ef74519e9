"""The dispatcher and the worker session over a real aiohttp server with real mutual TLS on 127.0.0.1.

Each test runs its own event loop (``asyncio.run``); servers, dispatchers and sessions are closed in
``finally`` blocks. Heartbeat periods are 0.1 s so expiry tests take well under a second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agents.manager.ca import NodeCredentials, Role, RootCA, client_context, server_context
from agents.manager.dispatcher import (
    MSG_HEARTBEAT_DOWN,
    MSG_HEARTBEAT_DOWN_UNKNOWN,
    MSG_UNKNOWN,
    Dispatcher,
)
from agents.manager.loop import LocalCommitter
from agents.pki import signing
from agents.state.objects import (
    ContainerSpec,
    ManagerStatus,
    Node,
    NodeRole,
    NodeState,
    NodeStatus,
    Secret,
    SecretReference,
    SecretSpec,
    Task,
    TaskSpec,
    TaskState,
    TaskStatus,
    new_id,
)
from agents.state.store import Store
from agents.worker.session import Assignments, ManagerInfo, WorkerSession

CLUSTER = "testcluster"
P = 0.1  # heartbeat period for the heartbeat/expiry tests (s)

_CA: RootCA | None = None
_CREDS: dict[tuple[str, Role], NodeCredentials] = {}


def ca() -> RootCA:
    global _CA
    if _CA is None:
        _CA = signing.new_root(CLUSTER)
    return _CA


def creds(node_id: str, role: Role = Role.WORKER) -> NodeCredentials:
    key = (node_id, role)
    if key not in _CREDS:
        _CREDS[key] = signing.new_credentials(ca(), node_id, role)
    return _CREDS[key]


def description(hostname: str, **extra: Any) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "platform": {"os": "linux", "architecture": "x86_64"},
        "engine": {"engine_version": "labagent-test", "labels": {"lab": "1"}},
        "resources": {"nano_cpus": 2_000_000_000, "memory_bytes": 2 << 30},
        **extra,
    }


def add_nodes(store: Store, ids: list[str], state: NodeState = NodeState.UNKNOWN) -> None:
    with store.local_batch() as tx:
        for nid in ids:
            tx.create(Node(id=nid, status=NodeStatus(state=state)))


def add_task(
    store: Store,
    node_id: str,
    state: TaskState = TaskState.ASSIGNED,
    desired: TaskState = TaskState.RUNNING,
    secrets: list[str] | None = None,
    env: list[str] | None = None,
) -> str:
    spec = TaskSpec(
        container=ContainerSpec(
            image="busybox",
            env=env or [],
            secrets=[SecretReference(secret_id=s, secret_name=s, file_name=s) for s in secrets or []],
        )
    )
    t = Task(id=new_id(), node_id=node_id, spec=spec, desired_state=desired, status=TaskStatus(state=state))
    with store.local_batch() as tx:
        tx.create(t)
    return t.id


def update_task(store: Store, tid: str, fn: Callable[[Task], None]) -> None:
    stored = store.get(Task, tid)
    assert stored is not None
    t = stored.copy()
    fn(t)
    with store.local_batch() as tx:
        tx.update(t)


def node(store: Store, nid: str) -> Node:
    n = store.get(Node, nid)
    assert n is not None
    return n


def task(store: Store, tid: str) -> Task:
    t = store.get(Task, tid)
    assert t is not None
    return t


async def until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Wait for ``pred``; returns the time it took."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


class Server:
    """An aiohttp control-plane server on 127.0.0.1 with one dispatcher mounted."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.runner: web.AppRunner | None = None
        self.addr = ""

    async def __aenter__(self) -> Server:
        app = web.Application()
        self.d.add_routes(app)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{sock.getsockname()[1]}"
        ctx = server_context(creds("mgr-" + str(id(self)), Role.MANAGER), ca(), require_client_cert=False)
        await web.SockSite(self.runner, sock, ssl_context=ctx).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.d.stop()
        if self.runner is not None:
            await self.runner.cleanup()


def make_dispatcher(store: Store, **kw: Any) -> Dispatcher:
    kw.setdefault("heartbeat_period_s", 0.5)  # roomy: only the heartbeat tests need P, and say so
    kw.setdefault("is_leader", lambda: True)
    kw.setdefault("leader_address", lambda: None)
    kw.setdefault("cluster_id", CLUSTER)
    return Dispatcher(store, LocalCommitter(store), **kw)


async def started(d: Dispatcher) -> Dispatcher:
    d.start()
    await until(lambda: d.accepting, what="dispatcher start")
    return d


class Raw:
    """A protocol-level node: sends exactly what the test says, records everything it receives."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.seen: list[dict[str, Any]] = []
        self.beater: asyncio.Task[None] | None = None

    def heartbeat(self, period: float = P) -> None:
        """Heartbeat in the background (what a well-behaved node does) until closed."""

        async def beat() -> None:
            with contextlib.suppress(Exception):
                while not self.ws.closed:
                    await self.send(type="heartbeat")
                    await asyncio.sleep(period)

        self.beater = asyncio.get_running_loop().create_task(beat())

    @classmethod
    async def connect(cls, addr: str, c: NodeCredentials | None) -> Raw:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(f"https://{addr}/v1/session", ssl=client_context(c, ca()))
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    @classmethod
    async def register(
        cls, server: str, nid: str, extra: dict[str, Any] | None = None, beat: bool = True, **desc: Any
    ) -> Raw:
        r = await cls.connect(server, creds(nid))
        await r.send(type="register", description=description(nid, **desc), **(extra or {}))
        if beat:
            r.heartbeat()
        return r

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def recv(self, mtype: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.ws.receive()
                if raw.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionResetError(f"closed: {raw.type!r} {self.ws.close_code}")
                msg: dict[str, Any] = json.loads(raw.data)
                self.seen.append(msg)
                if mtype is None or msg["type"] == mtype:
                    return msg

    async def no_message(self, mtype: str, wait: float = 0.3) -> None:
        with contextlib.suppress(TimeoutError):
            msg = await self.recv(mtype, timeout=wait)
            raise AssertionError(f"unexpected {mtype}: {msg}")

    async def close(self) -> None:
        if self.beater is not None:
            self.beater.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.http.close()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


# ------------------------------------------------------------------------------------------ registration


def test_register_marks_node_ready_with_description() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1", "n2"])
        async with Server(await started(make_dispatcher(store, heartbeat_period_s=P))) as srv:
            r = await Raw.register(srv.addr, "n1")
            r2: Raw | None = None
            try:
                r2 = await Raw.register(srv.addr, "n2", addr="10.0.0.2")
                first = await r.recv()
                assert first["type"] == "session" and first["node_id"] == "n1"
                assert first["heartbeat_period_s"] == pytest.approx(P)
                assert (await r.recv())["type"] == "managers"
                full = await r.recv()
                assert full["type"] == "assignments" and full["full"] is True and full["tasks"] == []
                await r2.recv("session")
                n1, n2 = node(store, "n1"), node(store, "n2")
                assert n1.status.state == NodeState.READY
                assert n1.description.hostname == "n1"
                assert n1.description.platform.architecture == "x86_64"
                assert n1.description.engine.engine_version == "labagent-test"
                assert n1.description.resources.nano_cpus == 2_000_000_000
                assert n1.status.addr == "127.0.0.1"  # the TCP peer when the node gives none
                assert n2.status.addr == "10.0.0.2" and n2.description.hostname == "n2"
            finally:
                await r.close()
                if r2 is not None:
                    await r2.close()

    run(main())


def test_heartbeats_keep_ready_silence_marks_down_and_reconnect_restores() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        d = await started(make_dispatcher(store, heartbeat_period_s=P))
        async with Server(d) as srv:
            r = await Raw.register(srv.addr, "n1", beat=False)
            try:
                await r.recv("assignments")
                last_beat = 0.0
                for _ in range(8):  # 0.8 s, well past period * grace = 0.3 s
                    await asyncio.sleep(P)
                    last_beat = time.monotonic()
                    await r.send(type="heartbeat")
                    ack = await r.recv("heartbeat")
                    assert ack["heartbeat_period_s"] == pytest.approx(P)
                assert node(store, "n1").status.state == NodeState.READY
                await until(lambda: node(store, "n1").status.state == NodeState.DOWN, 2.0, "down")
                silent = time.monotonic() - last_beat
                assert node(store, "n1").status.message == MSG_HEARTBEAT_DOWN
                # period * grace, plus at most one batching interval and some scheduling slack
                assert P * 3 - 0.02 <= silent <= P * 3 + 0.3, silent
                with pytest.raises(ConnectionResetError):  # the manager ended the session
                    await r.recv("never", timeout=2.0)
                assert not d.has_session("n1")
            finally:
                await r.close()
            r = await Raw.register(srv.addr, "n1")
            try:
                await r.recv("session")
                assert node(store, "n1").status.state == NodeState.READY
                assert node(store, "n1").status.message == ""
            finally:
                await r.close()

    run(main())


def test_identity_comes_from_the_certificate_cn() -> None:
    """A worker certificate for n1 cannot act as n2, whatever its messages claim."""

    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1", "n2", "m1"])
        theirs = add_task(store, "n2")
        async with Server(await started(make_dispatcher(store))) as srv:
            r = await Raw.register(srv.addr, "n1", {"node_id": "n2", "session_id": "x"})
            m: Raw | None = None
            try:
                sess = await r.recv("session")
                assert sess["node_id"] == "n1"
                full = await r.recv("assignments")
                assert full["tasks"] == []  # n2's task is not offered to n1
                await r.send(type="status", node_id="n2", updates=[{"task_id": theirs, "state": "running"}])
                assert (await r.recv("status_ack"))["dropped"] == 1
                assert node(store, "n1").status.state == NodeState.READY
                assert node(store, "n2").status.state == NodeState.UNKNOWN  # untouched
                assert task(store, theirs).status.state == TaskState.ASSIGNED
                # Managers run the worker side too: a manager certificate opens a session for its own id.
                m = await Raw.connect(srv.addr, creds("m1", Role.MANAGER))
                await m.send(type="register", description=description("m1"))
                assert (await m.recv("session"))["node_id"] == "m1"
            finally:
                await r.close()
                if m is not None:
                    await m.close()

    run(main())


def test_unknown_node_and_missing_cert_are_rejected() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        d = await started(make_dispatcher(store))
        async with Server(d) as srv:
            # No client certificate: 403 with a JSON body, before any websocket.
            async with aiohttp.ClientSession() as http:
                async with http.get(f"https://{srv.addr}/v1/session", ssl=client_context(None, ca())) as resp:
                    assert resp.status == 403
                    assert "no client certificates" in (await resp.json())["message"]
                with pytest.raises(aiohttp.WSServerHandshakeError) as ei:
                    await http.ws_connect(f"https://{srv.addr}/v1/session", ssl=client_context(None, ca()))
                assert ei.value.status == 403
            # A certificate from another cluster's CA does not even get through TLS.
            other = signing.new_root("othercluster")
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                async with aiohttp.ClientSession() as http:
                    await http.ws_connect(
                        f"https://{srv.addr}/v1/session",
                        ssl=client_context(signing.new_credentials(other, "n1", Role.WORKER), ca()),
                    )
            # A valid certificate for a node the store doesn't know.
            r = await Raw.register(srv.addr, "ghost")
            try:
                err = await r.recv()
                assert err["type"] == "error" and "not found" in err["message"]
            finally:
                await r.close()
            # A worker cert whose CN is n1 can only ever act as n1: check the store is untouched for others.
            assert store.get(Node, "ghost") is None
            assert d.stats.sessions_rejected >= 2

    run(main())


def test_newer_session_replaces_older() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        d = await started(make_dispatcher(store))
        async with Server(d) as srv:
            a = await Raw.register(srv.addr, "n1")
            b: Raw | None = None
            try:
                s1 = await a.recv("session")
                b = await Raw.register(srv.addr, "n1")
                s2 = await b.recv("session")
                assert s1["session_id"] != s2["session_id"]
                err = await a.recv("error")
                assert "replaced" in err["message"]
                await b.send(type="heartbeat")
                await b.recv("heartbeat")
                assert d.session_count() == 1
            finally:
                await a.close()
                if b is not None:
                    await b.close()

    run(main())


# ------------------------------------------------------------------------------------------ assignments


def test_assignments_full_set_then_incremental() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1", "n2"])
        t_assigned = add_task(store, "n1")
        add_task(store, "n1", state=TaskState.PENDING)  # not yet assigned: the node must not see it
        add_task(store, "n2")
        async with Server(await started(make_dispatcher(store))) as srv:
            r = await Raw.register(srv.addr, "n1")
            try:
                full = await r.recv("assignments")
                assert full["full"] is True
                assert [t["id"] for t in full["tasks"]] == [t_assigned]
                assert full["tasks"][0]["spec"]["container"]["image"] == "busybox"
                assert full["tasks"][0]["desired_state"] == int(TaskState.RUNNING)

                t_new = add_task(store, "n1")  # the scheduler assigns a task
                inc = await r.recv("assignments")
                assert inc["full"] is False and [t["id"] for t in inc["tasks"]] == [t_new]

                # A status-only change (the node's own report echoing back) is not resent.
                update_task(store, t_new, lambda t: setattr(t.status, "state", TaskState.RUNNING))
                await r.no_message("assignments")

                update_task(store, t_new, lambda t: setattr(t, "desired_state", TaskState.SHUTDOWN))
                inc = await r.recv("assignments")
                assert [(t["id"], t["desired_state"]) for t in inc["tasks"]] == [
                    (t_new, int(TaskState.SHUTDOWN))
                ]

                with store.local_batch() as tx:  # the reaper deletes it
                    tx.delete(Task, t_new)
                inc = await r.recv("assignments")
                assert inc["removed"] == [t_new] and inc["tasks"] == []

                # Moving a task to another node removes it here.
                def move(t: Task) -> None:
                    t.node_id = "n2"

                update_task(store, t_assigned, move)
                inc = await r.recv("assignments")
                assert inc["removed"] == [t_assigned]
            finally:
                await r.close()

    run(main())


def test_secrets_only_for_referenced_and_released_when_done() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1", "n2"])
        with store.local_batch() as tx:
            for name in ("s1", "s2", "s3"):
                tx.create(Secret(id=name, spec=SecretSpec(name=name, data=f"data-{name}".encode())))
        t1 = add_task(store, "n1", secrets=["s1"])
        add_task(store, "n2", secrets=["s2"])
        async with Server(await started(make_dispatcher(store))) as srv:
            r = await Raw.register(srv.addr, "n1")
            try:
                full = await r.recv("assignments")
                assert [(s["id"], base64.b64decode(s["data"])) for s in full["secrets"]] == [
                    ("s1", b"data-s1")
                ]

                t3 = add_task(store, "n1", secrets=["s3", "s1"])
                inc = await r.recv("assignments")
                assert [s["id"] for s in inc["secrets"]] == ["s3"]  # s1 is already there

                update_task(store, t1, lambda t: setattr(t.status, "state", TaskState.COMPLETE))
                await r.no_message("assignments")  # t3 still uses s1: nothing to release
                update_task(store, t3, lambda t: setattr(t.status, "state", TaskState.FAILED))
                inc = await r.recv("assignments")
                assert sorted(inc["removed_secrets"]) == ["s1", "s3"]
                assert all(s["id"] != "s2" for m in r.seen for s in m.get("secrets", []))
            finally:
                await r.close()

    run(main())


# ---------------------------------------------------------------------------------------------- status


def test_status_updates_validated_and_batched() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1", "n2"])
        mine = add_task(store, "n1")
        theirs = add_task(store, "n2")
        async with Server(await started(make_dispatcher(store))) as srv:
            r = await Raw.register(srv.addr, "n1")
            try:
                await r.recv("assignments")
                await r.send(
                    type="status",
                    seq=1,
                    updates=[
                        {
                            "task_id": mine,
                            "state": "running",
                            "container_id": "c1",
                            "pid": 42,
                            "message": "started",
                        },
                        {"task_id": theirs, "state": "running"},  # another node's task
                        {"task_id": "nope", "state": "running"},  # unknown task
                        {"task_id": mine, "state": "bogus"},
                        "not even a dict",
                    ],
                )
                ack = await r.recv("status_ack")
                assert ack["seq"] == 1 and ack["accepted"] == 1 and ack["dropped"] == 4
                await until(lambda: task(store, mine).status.state == TaskState.RUNNING, what="running")
                st = task(store, mine).status
                assert st.message == "started" and st.container_status is not None
                assert (st.container_status.container_id, st.container_status.pid) == ("c1", 42)
                assert task(store, theirs).status.state == TaskState.ASSIGNED

                # Backwards and manager-only states are ignored; the session lives on.
                await r.send(type="status", seq=2, updates=[{"task_id": mine, "state": "starting"}])
                await r.send(type="status", seq=3, updates=[{"task_id": mine, "state": "orphaned"}])
                await r.send(type="status", seq=4, updates=[{"task_id": mine, "state": "assigned"}])
                await r.ws.send_str("{garbage")
                for seq in (2, 3, 4):
                    ack = await r.recv("status_ack")
                    assert (ack["seq"], ack["dropped"]) == (seq, 1)
                await r.send(
                    type="status",
                    seq=5,
                    updates=[
                        {"task_id": mine, "state": int(TaskState.FAILED), "exit_code": 3, "err": "boom"}
                    ],
                )
                assert (await r.recv("status_ack"))["accepted"] == 1
                await until(lambda: task(store, mine).status.state == TaskState.FAILED, what="failed")
                st = task(store, mine).status
                assert (
                    st.err == "boom"
                    and st.container_status is not None
                    and st.container_status.exit_code == 3
                )
            finally:
                await r.close()

    run(main())


def test_status_beyond_desired_state_is_refused_but_terminal_allowed() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        tid = add_task(store, "n1", desired=TaskState.READY)  # prepare only (start-first style)
        async with Server(await started(make_dispatcher(store))) as srv:
            r = await Raw.register(srv.addr, "n1")
            try:
                await r.recv("assignments")
                await r.send(type="status", seq=1, updates=[{"task_id": tid, "state": "running"}])
                assert (await r.recv("status_ack"))["dropped"] == 1
                await r.send(type="status", seq=2, updates=[{"task_id": tid, "state": "ready"}])
                assert (await r.recv("status_ack"))["accepted"] == 1
                await until(lambda: task(store, tid).status.state == TaskState.READY)
                await r.send(
                    type="status", seq=3, updates=[{"task_id": tid, "state": "rejected", "err": "no image"}]
                )
                assert (await r.recv("status_ack"))["accepted"] == 1
                await until(lambda: task(store, tid).status.state == TaskState.REJECTED)
            finally:
                await r.close()

    run(main())


def test_batch_rejected_by_store_is_split_and_good_updates_land() -> None:
    """A changeset is all-or-nothing: a raced update must not sink the other updates in its batch."""

    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        tids = [add_task(store, "n1") for _ in range(8)]
        d = make_dispatcher(store, flush_interval_s=10.0)  # flush by hand below
        d.start()
        await until(lambda: d.accepting)
        try:
            for tid in tids:
                d._task_updates[tid] = ("n1", TaskStatus(state=TaskState.RUNNING, timestamp=1.0))

            class Racing(LocalCommitter):
                """Lets another writer move one task past RUNNING just before each commit."""

                def __init__(self, store: Store) -> None:
                    super().__init__(store)
                    self.raced = False

                async def commit(self, changeset: Any) -> Any:
                    if not self.raced:
                        self.raced = True
                        update_task(store, tids[3], lambda t: setattr(t.status, "state", TaskState.FAILED))
                    return await super().commit(changeset)

            d.committer = Racing(store)
            await d._flush()
            states = [task(store, t).status.state for t in tids]
            assert states[3] == TaskState.FAILED
            assert all(s == TaskState.RUNNING for i, s in enumerate(states) if i != 3)
            assert d.stats.batches_split >= 1
        finally:
            await d.stop()

    run(main())


# --------------------------------------------------------------------------------------------- leaders


def test_follower_redirects_worker_to_leader() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        leader_addr: list[str] = []
        leader = make_dispatcher(store, leader_address=lambda: leader_addr[0])
        follower = make_dispatcher(store, is_leader=lambda: False, leader_address=lambda: leader_addr[0])
        got: list[Assignments] = []
        async with Server(leader) as lsrv, Server(follower) as fsrv:
            leader_addr.append(lsrv.addr)
            await started(leader)
            r = await Raw.register(fsrv.addr, "n1")
            try:
                msg = await r.recv()
                assert msg == {
                    "type": "redirect",
                    "leader": lsrv.addr,
                    "message": "this manager is not the leader",
                }
            finally:
                await r.close()
            ws = WorkerSession(creds("n1"), ca(), [fsrv.addr], description("n1"), got.append)
            ws.start()
            try:
                await ws.wait_connected(5)
                assert ws.leader == lsrv.addr and leader.has_session("n1")
                await until(lambda: bool(got) and got[0].full)
                assert node(store, "n1").status.state == NodeState.READY
                assert follower.stats.redirects >= 2
            finally:
                await ws.stop()

    run(main())


def test_worker_follows_leader_change() -> None:
    """Old leader loses leadership: on the next heartbeat it redirects; the worker moves to the new one."""

    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        state = {"leader": "a"}
        addrs: dict[str, str] = {}
        da = make_dispatcher(
            store, is_leader=lambda: state["leader"] == "a", leader_address=lambda: addrs[state["leader"]]
        )
        db = make_dispatcher(
            store, is_leader=lambda: state["leader"] == "b", leader_address=lambda: addrs[state["leader"]]
        )
        seen_managers: list[list[ManagerInfo]] = []
        async with Server(da) as sa, Server(db) as sb:
            addrs.update(a=sa.addr, b=sb.addr)
            await started(da)
            ws = WorkerSession(
                creds("n1"), ca(), [sa.addr], description("n1"), lambda a: None, seen_managers.append
            )
            ws.start()
            try:
                await ws.wait_connected(5)
                assert ws.leader == sa.addr
                await until(lambda: bool(seen_managers), what="managers callback")
                assert seen_managers[-1][0] == ManagerInfo(sa.addr, "", True)
                state["leader"] = "b"
                await da.stop()
                await started(db)
                await until(lambda: ws.connected and ws.leader == sb.addr, 5, "worker on new leader")
                await until(lambda: node(store, "n1").status.state == NodeState.READY)
            finally:
                await ws.stop()

    run(main())


def test_new_leader_marks_nodes_unknown_with_grace() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["back", "gone"], NodeState.READY)
        add_nodes(store, ["dead"], NodeState.DOWN)
        d = make_dispatcher(store, heartbeat_period_s=P)
        async with Server(d) as srv:
            t0 = time.monotonic()  # leadership starts: unknown deadlines are armed from here on
            await started(d)
            for nid in ("back", "gone"):
                assert node(store, nid).status.state == NodeState.UNKNOWN
                assert node(store, nid).status.message == MSG_UNKNOWN
            assert node(store, "dead").status.state == NodeState.DOWN  # never resurrected
            ws = WorkerSession(creds("back"), ca(), [srv.addr], description("back"), lambda a: None)
            ws.start()
            try:
                await ws.wait_connected(5)
                assert node(store, "back").status.state == NodeState.READY
                # The silent node gets twice the usual grace: not down at period * grace...
                await asyncio.sleep(max(0.0, P * 3 + 0.05 - (time.monotonic() - t0)))
                if time.monotonic() - t0 < P * 6 - 0.05:  # (unless this machine stalled us past it)
                    assert node(store, "gone").status.state == NodeState.UNKNOWN
                # ...but down soon after period * grace * 2.
                await until(lambda: node(store, "gone").status.state == NodeState.DOWN, 2.0)
                assert time.monotonic() - t0 >= P * 6 - 0.02
                assert node(store, "gone").status.message == MSG_HEARTBEAT_DOWN_UNKNOWN
                await asyncio.sleep(P * 3)
                assert node(store, "back").status.state == NodeState.READY  # heartbeating all along
            finally:
                await ws.stop()

    run(main())


def test_managers_list_pushed_on_change() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        with store.local_batch() as tx:
            tx.create(
                Node(
                    id="m1",
                    role=NodeRole.MANAGER,
                    manager_status=ManagerStatus(addr="10.0.0.1:2377", leader=True),
                    status=NodeStatus(state=NodeState.READY),
                )
            )
        async with Server(
            await started(make_dispatcher(store, leader_address=lambda: "10.0.0.1:2377"))
        ) as srv:
            r = await Raw.register(srv.addr, "n1")
            try:
                first = await r.recv("managers")
                assert first["managers"] == [{"addr": "10.0.0.1:2377", "node_id": "m1", "leader": True}]
                with store.local_batch() as tx:
                    tx.create(
                        Node(
                            id="m2", role=NodeRole.MANAGER, manager_status=ManagerStatus(addr="10.0.0.2:2377")
                        )
                    )
                nxt = await r.recv("managers")
                assert [m["addr"] for m in nxt["managers"]] == ["10.0.0.1:2377", "10.0.0.2:2377"]
            finally:
                await r.close()

    run(main())


# --------------------------------------------------------------------------------------- worker session


def test_worker_session_reports_survive_reconnect_and_follow_assignments() -> None:
    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1"])
        tid = add_task(store, "n1")
        got: list[Assignments] = []
        d = make_dispatcher(store)  # not started yet: the endpoint redirects (leader unknown)
        async with Server(d) as srv:
            ws = WorkerSession(
                creds("n1"),
                ca(),
                [srv.addr],
                description("n1"),
                got.append,
                initial_backoff_s=0.05,
                max_backoff_s=0.2,
            )
            ws.start()
            try:
                ws.report([{"task_id": tid, "state": "accepted"}])
                ws.report([{"task_id": tid, "state": "running", "pid": 7}])  # supersedes the unsent one
                await asyncio.sleep(0.3)
                assert not ws.connected and ws.pending_reports == 1
                await started(d)
                await ws.wait_connected(5)
                await until(lambda: task(store, tid).status.state == TaskState.RUNNING, what="report applied")
                await until(lambda: ws.pending_reports == 0, what="ack")
                assert got[0].full and [t.id for t in got[0].tasks] == [tid]
                assert isinstance(got[0].tasks[0], Task)

                # Leadership moves (stop + start): the worker reconnects and re-sends the latest states.
                await d.stop()
                await until(lambda: not ws.connected, 5)
                await started(d)
                await ws.wait_connected(5)
                sent_before = d.stats.status_received
                await until(lambda: d.stats.status_received > sent_before, what="re-send after reconnect")
                assert task(store, tid).status.state == TaskState.RUNNING

                # A removed task is forgotten by the reporter.
                with store.local_batch() as tx:
                    tx.delete(Task, tid)
                await until(lambda: any(tid in a.removed for a in got), what="removal")
                assert tid not in ws._latest
            finally:
                await ws.stop()

    run(main())


# ------------------------------------------------------------------------------------------ boundedness


@pytest.mark.parametrize("chatty", [True, False], ids=["queue-full", "send-timeout"])
def test_slow_consumer_is_disconnected_and_memory_stays_bounded(chatty: bool) -> None:
    """A node that stops reading: either its queue of small replies overflows (it keeps heartbeating) or a
    send stays blocked past ``send_timeout_s``; both cut it off, and it recovers with a full set."""
    queue = 16 if chatty else 10_000

    async def main() -> None:
        store = Store()
        add_nodes(store, ["slow"])
        tids = [add_task(store, "slow", env=[f"PAD={'x' * 200_000}"]) for _ in range(5)]
        d = await started(
            make_dispatcher(store, heartbeat_period_s=2.0, send_timeout_s=0.5, max_outbound=queue)
        )
        async with Server(d) as srv:
            r = await Raw.register(srv.addr, "slow", beat=chatty)  # registers, then never reads a byte
            try:
                await until(lambda: d.has_session("slow"))
                peak = 0
                for i in range(60):  # ~60 MB of spec changes; the node reads none of it

                    def bump(t: Task, n: int = i + 1) -> None:
                        t.spec.force_update = n

                    for tid in tids:
                        update_task(store, tid, bump)
                    peak = max(peak, d.pending_outbound())
                    if not d.has_session("slow"):
                        break
                    if chatty:
                        await r.send(type="heartbeat")  # it is alive, just slow
                    await asyncio.sleep(0.02)
                await until(lambda: not d.has_session("slow"), 5, "slow session dropped")
                assert d.stats.slow_disconnects >= 1
                assert peak <= len(tids) + 16 + 2  # coalesced per task + the bounded queue
                assert d.stats.heartbeat_expiries == 0
            finally:
                await r.close()
            # It reconnects and gets a full set.
            r = await Raw.register(srv.addr, "slow")
            try:
                full = await r.recv("assignments", timeout=10)
                assert full["full"] and len(full["tasks"]) == len(tids)
            finally:
                await r.close()

    run(main())


def test_many_nodes_register_and_report_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    n_nodes, per_node = 50, 4

    async def main() -> None:
        store = Store()
        ids = [f"node{i:02d}" for i in range(n_nodes)]
        add_nodes(store, ids)
        for nid in ids:  # warm the certificate cache outside the timing
            creds(nid)
        tasks = {nid: [add_task(store, nid) for _ in range(per_node)] for nid in ids}
        d = await started(make_dispatcher(store, heartbeat_period_s=0.5))
        async with Server(d) as srv:
            sessions = [
                WorkerSession(creds(nid), ca(), [srv.addr], description(nid), lambda a: None) for nid in ids
            ]
            try:
                t0 = time.monotonic()
                for s in sessions:
                    s.start()
                await until(
                    lambda: all(node(store, nid).status.state == NodeState.READY for nid in ids),
                    10,
                    "all ready",
                )
                t_register = time.monotonic() - t0
                t0 = time.monotonic()
                for s in sessions:
                    s.report([{"task_id": tid, "state": "running"} for tid in tasks[s.node_id]])
                all_tids = [tid for ts in tasks.values() for tid in ts]
                await until(
                    lambda: all(task(store, tid).status.state == TaskState.RUNNING for tid in all_tids),
                    10,
                    "running",
                )
                t_report = time.monotonic() - t0
                with capsys.disabled():
                    print(
                        f"\n[dispatcher] {n_nodes} sessions READY in {t_register * 1000:.0f} ms; "
                        f"{len(all_tids)} status updates committed in {t_report * 1000:.0f} ms "
                        f"({d.stats.batches} changesets so far)"
                    )
                assert t_register < 5.0 and t_report < 3.0
            finally:
                await asyncio.gather(*(s.stop() for s in sessions))

    run(main())


def test_status_update_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    n_tasks = 2000

    async def main() -> None:
        store = Store()
        add_nodes(store, ["busy"])
        tids = [add_task(store, "busy") for _ in range(n_tasks)]
        d = await started(make_dispatcher(store, heartbeat_period_s=0.5))
        async with Server(d) as srv:
            s = WorkerSession(creds("busy"), ca(), [srv.addr], description("busy"), lambda a: None)
            s.start()
            try:
                await s.wait_connected(5)
                t0 = time.monotonic()
                for state in ("accepted", "preparing", "starting", "running"):
                    s.report([{"task_id": tid, "state": state} for tid in tids])
                    await asyncio.sleep(0)
                await until(
                    lambda: all(task(store, tid).status.state == TaskState.RUNNING for tid in tids),
                    20,
                    "running",
                )
                dt = time.monotonic() - t0
                with capsys.disabled():
                    print(
                        f"\n[dispatcher] {n_tasks} tasks to RUNNING in {dt * 1000:.0f} ms "
                        f"({d.stats.status_received} updates received, {d.stats.status_committed} committed, "
                        f"{d.stats.status_received / dt:.0f} updates/s)"
                    )
            finally:
                await s.stop()

    run(main())
