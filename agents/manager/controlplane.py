"""The manager's control plane: HTTPS on `<advertise-addr>:2377` (see docs/swarm-design.md).

TLS asks for a client certificate but does not require one, because a joining node has none yet; every
endpoint but `/v1/ca` and `/v1/join` then demands a certificate of ours with the right role. Followers
answer leader-only requests with 421 and the leader's address, and callers retry there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agents.manager import ca
from agents.manager.errors import ManagerError, NoLeader, NotLeader
from agents.manager.manager import Manager, tls_for_control
from agents.manager.membership import (
    CONTROL_PORT,
    RAFT_PORT,
    admit,
    cluster_of,
    issue_node_cert,
    join_role,
    manager_addresses,
)
from agents.state.objects import Node, NodeDescription, NodeRole, new_id

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 2.0  # open sessions are cut after this on stop; nodes reconnect elsewhere
MISDIRECTED = 421  # "ask the leader": the body carries {"leader": "ip:2377"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"message": message, **extra}, status=status)


def peer_cert(request: web.Request) -> Any:
    ssl_obj = request.transport.get_extra_info("ssl_object") if request.transport else None
    return ca.peer_certificate(ssl_obj) if ssl_obj is not None else None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Manager errors keep their status; anything unexpected is logged and answered as JSON, never a page."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ManagerError as e:
        return _json_error(e.status, e.message)
    except Exception as e:
        log.exception("control plane: %s %s failed", request.method, request.path)
        return _json_error(500, f"internal error: {type(e).__name__}")


class ControlPlane:
    """Routes of the control plane; other parts (the dispatcher) add theirs with `add_routes`."""

    def __init__(self, manager: Manager, forward_to_local_api: Callable[[str, str, bytes, dict[str, str]], Awaitable[tuple[int, bytes, dict[str, str]]]] | None = None) -> None:
        self.manager = manager
        self.app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_errors])
        self.app.add_routes([
            web.get("/v1/ca", self.get_ca),
            web.post("/v1/join", self.join),
            web.post("/v1/renew", self.renew),
            web.get("/v1/role", self.role),
            web.post("/v1/raft/join", self.raft_join),
            web.post("/v1/forward", self.forward),
        ])
        self._forward_to_local_api = forward_to_local_api
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def add_routes(self, routes: list[web.RouteDef]) -> None:
        self.app.add_routes(routes)

    async def start(self, host: str, port: int = CONTROL_PORT) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls_for_control(self.manager.config),
                           reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --------------------------------------------------------------------------------------- helpers
    def _require(self, request: web.Request, role: ca.Role | None) -> str:
        """The caller's node id, after checking its certificate's role and cluster (TLS verified its chain:
        a certificate sent to this port must chain to our root even though one is optional)."""
        cert = peer_cert(request)
        if cert is None:
            raise web.HTTPForbidden(text=json.dumps({"message": "a node certificate is required"}),
                                    content_type="application/json")
        try:
            ca.require_role(cert, role or ca.peer_role(cert), cluster_id=self.manager.cluster_id())
        except ca.PermissionDeniedError as e:
            raise web.HTTPForbidden(text=json.dumps({"message": str(e)}), content_type="application/json") from None
        return ca.identity_of(cert).node_id

    def _leader_only(self) -> web.Response | None:
        if self.manager.is_leader:
            return None
        leader = self.manager.leader_control_addr()
        if leader is None:
            return _json_error(503, NoLeader().message)
        return _json_error(MISDIRECTED, "not the leader", leader=leader)

    # --------------------------------------------------------------------------------------- endpoints
    async def get_ca(self, request: web.Request) -> web.Response:
        return web.json_response({"ca": self.manager.config.root_ca_pem.decode()})

    async def join(self, request: web.Request) -> web.Response:
        redirect = self._leader_only()
        if redirect is not None:
            return redirect
        try:
            body = await request.json()
            token = str(body["token"])
            csr = str(body["csr"]).encode()
            advertise_ip = str(body["advertise_ip"])
            hostname = str(body.get("hostname", ""))
            description = NodeDescription.from_dict(body.get("description") or {})
        except (ValueError, KeyError, TypeError) as e:
            return _json_error(400, f"malformed join request: {e}")
        description.hostname = description.hostname or hostname
        peer = request.remote
        store = self.manager.store
        node_id = new_id()
        raft_id = random.SystemRandom().getrandbits(63) | 1
        try:
            role = join_role(cluster_of(store), token, peer=peer)  # before signing: a bad token costs nothing
            cert = await issue_node_cert(cluster_of(store), csr, node_id, role)
            with store.batch() as tx:
                admission = admit(tx, token=token, role=role, cert_pem=cert, node_id=node_id, raft_id=raft_id,
                                  advertise_ip=advertise_ip, description=description, peer=peer)
            assert tx.changeset is not None
            result = await self.manager.commit(tx.changeset)
            if not result.ok:
                return _json_error(500, f"could not record the node: {result.error}")
        except ManagerError as e:
            log.warning("refused join from %s: %s", peer, e.message)
            return _json_error(e.status, e.message)
        if admission.role is NodeRole.MANAGER:
            self._spawn(self.manager.raft.add_member(raft_id, (advertise_ip, RAFT_PORT), timeout=60))
        log.info("node %s (%s) joined as %s", node_id, description.hostname, admission.role.value)
        return web.json_response(self._welcome(node_id, raft_id, admission.cert_pem, admission.role))

    def _welcome(self, node_id: str, raft_id: int, cert_pem: bytes, role: NodeRole) -> dict[str, Any]:
        store = self.manager.store
        return {
            "node_id": node_id,
            "raft_id": raft_id,
            "role": role.value,
            "cert": cert_pem.decode(),
            "ca": self.manager.config.root_ca_pem.decode(),
            "cluster_id": cluster_of(store).id,
            "managers": [m.__dict__ for m in manager_addresses(store, self.manager.raft.leader)],
        }

    async def renew(self, request: web.Request) -> web.Response:
        """A fresh certificate for the caller's current desired role (renewal, promotion, demotion)."""
        node_id = self._require(request, None)
        node = self.manager.store.get(Node, node_id)
        if node is None:
            return _json_error(404, f"node {node_id} not found")
        try:
            body = await request.json()
            csr = str(body["csr"]).encode()
        except (ValueError, KeyError, TypeError) as e:
            return _json_error(400, f"malformed renew request: {e}")
        role = ca.Role.MANAGER if node.spec.role is NodeRole.MANAGER else ca.Role.WORKER
        cert = await issue_node_cert(cluster_of(self.manager.store), csr, node_id, role)  # errors: _errors
        return web.json_response({"cert": cert.decode(), "role": node.spec.role.value})

    async def role(self, request: web.Request) -> web.Response:
        """What the caller should be: its desired role, and the Raft id the role manager gave it."""
        node_id = self._require(request, None)
        node = self.manager.store.get(Node, node_id)
        if node is None:
            return _json_error(404, f"node {node_id} not found")
        ms = node.manager_status
        return web.json_response({
            "role": node.spec.role.value,
            "observed": node.role.value,
            "raft_id": ms.raft_id if ms is not None else 0,
            "removed": node.spec.role is NodeRole.WORKER and ms is None,
        })

    async def raft_join(self, request: web.Request) -> web.Response:
        """A promoted node, now holding a manager certificate, asks to become a Raft member."""
        node_id = self._require(request, ca.Role.MANAGER)
        redirect = self._leader_only()
        if redirect is not None:
            return redirect
        node = self.manager.store.get(Node, node_id)
        if node is None or node.manager_status is None:
            return _json_error(409, f"node {node_id} is not a manager")
        ip = node.manager_status.addr.rsplit(":", 1)[0]
        self._spawn(self.manager.raft.add_member(node.manager_status.raft_id, (ip, RAFT_PORT), timeout=60))
        return web.json_response({"raft_id": node.manager_status.raft_id,
                                  "managers": [m.__dict__ for m in manager_addresses(self.manager.store, self.manager.raft.leader)]})

    async def forward(self, request: web.Request) -> web.Response:
        """A follower hands a Docker API request to the leader, which answers it as if asked locally."""
        self._require(request, ca.Role.MANAGER)
        if self._forward_to_local_api is None:
            return _json_error(501, "forwarding is not available on this manager")
        try:
            body = await request.json()
            method, path = str(body["method"]), str(body["path"])
            payload = base64.b64decode(body.get("body", ""))
            headers = {str(k): str(v) for k, v in (body.get("headers") or {}).items()}
        except (ValueError, KeyError, TypeError) as e:
            return _json_error(400, f"malformed forward request: {e}")
        status, data, out_headers = await self._forward_to_local_api(method, path, payload, headers)
        return web.json_response({"status": status, "body": base64.b64encode(data).decode(), "headers": out_headers})

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("background membership change failed: %s", t.exception())

        task.add_done_callback(done)


__all__ = ["MISDIRECTED", "ControlPlane", "NotLeader"]
