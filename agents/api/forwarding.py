"""Follower -> leader forwarding of Docker API requests (docs/swarm-design.md, ``POST /v1/forward``).

SwarmKit answers every control-API call on the leader (followers proxy it); we do the same one level
up, with whole HTTP requests: a follower manager wraps the request it received (method, path with
query, body, the headers that matter) and posts it to the leader's control plane with its manager
certificate. The leader replays it against its *own* Docker API socket (:func:`local_replayer`) with
:data:`FORWARDED_HEADER` set, so the very same handler answers it, and the follower relays the status,
body and Content-Type unchanged. A replayed request never forwards again: a node that lost leadership
meanwhile answers 421 with the new leader's address and the follower retries there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from agents.api.errors import ApiError, Unavailable
from agents.api.httputil import json_response
from agents.manager.errors import NO_LEADER_MSG

if TYPE_CHECKING:
    from agents.manager.manager import Manager
    from agents.swarmnode import SwarmNode

log = logging.getLogger("labagent.api.forward")

FORWARDED_HEADER = "X-Labagent-Forwarded"
"""Set on a request the leader replays for a follower; such a request is never forwarded again."""

MISDIRECTED = 421
FORWARD_HEADERS = ("Content-Type", "X-Registry-Auth", "User-Agent")
"""Request headers handlers may look at; the rest (Host, Content-Length…) belong to the hop."""
RETURN_HEADERS = ("Content-Type",)
MAX_ATTEMPTS = 64
"""Redirects plus retries while a new leader is elected (each retry waits LEADER_POLL; the deadline rules)."""
FORWARD_TIMEOUT = 60.0
"""Long enough for a commit under an election; the CLI waits much longer."""
CONNECT_TIMEOUT = 2.0
"""A halted leader drops SYNs: give up on it quickly and look for the new one."""
LEADER_POLL = 0.2
MIN_LEADER_WAIT = 3.0

LocalApi = Callable[[str, str, bytes, dict[str, str]], Awaitable[tuple[int, bytes, dict[str, str]]]]


def is_forwarded(request: web.Request) -> bool:
    return FORWARDED_HEADER in request.headers


def misdirected(manager: Manager) -> web.Response:
    """What a node that is no longer the leader answers to a replayed request."""
    leader = manager.leader_control_addr()
    if leader is None:
        raise Unavailable(NO_LEADER_MSG)
    return json_response({"message": "this manager is not the leader", "leader": leader}, status=MISDIRECTED)


def _client_tls(swarm: SwarmNode) -> Any:
    from agents.manager import ca

    return ca.client_context(ca.NodeCredentials.load(swarm.state_dir), ca.RootCA.load(swarm.state_dir).cert_pem)


async def forward(request: web.Request, swarm: SwarmNode, manager: Manager) -> web.Response:
    """Answer ``request`` with the leader's answer to it (raises 503 when no leader can be reached).

    A leader that cannot be reached (halted, cut off) is not the end: while the election that replaces
    it runs, this follower keeps re-reading who leads and tries again, for :func:`_give_up_after`.
    Connecting is retried for any request; a request that may have reached the leader is retried only
    when it is a read (``GET``/``HEAD``), as a write's outcome is then unknown.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _give_up_after(manager)
    body = await request.read()
    payload = {
        "method": request.method,
        "path": request.path_qs,
        "body": base64.b64encode(body).decode(),
        "headers": {h: request.headers[h] for h in FORWARD_HEADERS if h in request.headers},
    }
    idempotent = request.method in ("GET", "HEAD")
    tls = _client_tls(swarm)
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
    redirected_to: str | None = None
    async with aiohttp.ClientSession() as session:
        for _ in range(MAX_ATTEMPTS):
            leader = redirected_to or await _await_leader(manager, deadline)
            redirected_to = None
            try:
                async with session.post(f"https://{leader}/v1/forward", json=payload, ssl=tls,
                                        timeout=timeout) as resp:
                    status = resp.status
                    data = json.loads(await resp.read())
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                log.info("forwarding %s %s: leader %s unreachable (%s); waiting for a leader",
                         request.method, request.path, leader, e)
                await _pause_or_give_up(loop, deadline)
                continue
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.warning("forwarding %s %s to %s failed: %s", request.method, request.path, leader, e)
                if not idempotent:
                    raise Unavailable(NO_LEADER_MSG) from None
                await _pause_or_give_up(loop, deadline)
                continue
            if not isinstance(data, dict):
                raise ApiError(502, f"unexpected answer from the leader at {leader}")
            if status != 200:
                if status == MISDIRECTED and data.get("leader"):
                    redirected_to = str(data["leader"])
                    continue
                raise ApiError(status if status >= 400 else 502, str(data.get("message", f"HTTP {status}")))
            inner_status = int(data.get("status", 502))
            inner_body = base64.b64decode(str(data.get("body", "")))
            if inner_status == MISDIRECTED:
                try:
                    redirected_to = str(json.loads(inner_body)["leader"])
                except (ValueError, KeyError, TypeError):
                    raise Unavailable(NO_LEADER_MSG) from None
                continue
            headers = {k: str(v) for k, v in (data.get("headers") or {}).items() if k in RETURN_HEADERS}
            return web.Response(status=inner_status, body=inner_body, headers=headers)
    raise Unavailable(NO_LEADER_MSG)


def _give_up_after(manager: Manager) -> float:
    """How long a follower waits for a reachable leader: a few election timeouts (as a proposal)."""
    return max(MIN_LEADER_WAIT, 4 * manager.election_timeout)


async def _await_leader(manager: Manager, deadline: float) -> str:
    """The leader's control address, waiting out an election under way; Docker's "no leader" error at
    once when this manager has seen no leader for two election timeouts (quorum is lost: SwarmKit's
    ``LeaderConn`` gives up after one; the second absorbs a split vote on a loaded host)."""
    loop = asyncio.get_running_loop()
    while True:
        leader = manager.leader_control_addr()
        if leader is not None:
            return leader
        if manager.leaderless_for() > 2 * manager.election_timeout or loop.time() >= deadline:
            raise Unavailable(NO_LEADER_MSG)
        await asyncio.sleep(LEADER_POLL)


async def _pause_or_give_up(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    if loop.time() + LEADER_POLL >= deadline:
        raise Unavailable(NO_LEADER_MSG)
    await asyncio.sleep(LEADER_POLL)


def local_replayer(socket_path: Path) -> LocalApi:
    """The leader's half: replay a forwarded request on this node's own Docker API socket."""

    async def replay(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if not path.startswith("/"):
            return 400, b'{"message":"malformed forward request: path must start with /"}\n', {
                "Content-Type": "application/json"}
        send = {k: v for k, v in headers.items() if k in FORWARD_HEADERS}
        send[FORWARDED_HEADER] = "1"
        connector = aiohttp.UnixConnector(path=str(socket_path))
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, session.request(
            method, f"http://docker{path}", data=body or None, headers=send, skip_auto_headers=("Content-Type",)
        ) as resp:
            data = await resp.read()
            out = {k: resp.headers[k] for k in RETURN_HEADERS if k in resp.headers}
            return resp.status, data, out

    return replay
