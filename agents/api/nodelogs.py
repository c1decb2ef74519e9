"""Task logs across nodes: every swarm node serves its tasks' logs to managers on ``<addr>:2379``.

``docker service logs`` runs on a manager, but the lines live on the nodes that ran the tasks. Each
node in a swarm listens on ``<advertise-addr>:2379`` (HTTPS, mutual TLS with the node certificates)
with one endpoint, ``GET /v1/logs/{task_id}?follow&tail&since&stdout&stderr``, answered only to
*manager* certificates of the same cluster. The body is one JSON object per line,
``{"s": stream, "t": RFC 3339 time, "d": base64 line}``, read from the node's worker (``Worker.logs``);
with ``follow`` it stays open. A manager asks the node named by the task's ``NodeID`` at the address
the node registered (``Node.status.addr``); tasks on the manager itself are read locally.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agents.api.logstream import LogOptions, node_worker, worker_entries
from agents.context import NodeContext
from agents.manager import ca
from agents.worker.executor.logs import LogEntry

log = logging.getLogger("labagent.nodelogs")

NODE_LOG_PORT = 2379
CHECK_INTERVAL_S = 1.0


def _credentials(state_dir: Path) -> tuple[ca.NodeCredentials, bytes] | None:
    try:
        return ca.NodeCredentials.load(state_dir), ca.RootCA.load(state_dir).cert_pem
    except (OSError, ValueError):
        return None


class NodeLogServer:
    """The ``:2379`` listener of one node (started and stopped by :func:`run_node_log_server`)."""

    def __init__(self, ctx: NodeContext, creds: ca.NodeCredentials, root_pem: bytes) -> None:
        self.ctx = ctx
        self.creds = creds
        self.root_pem = root_pem
        self.app = web.Application()
        self.app.add_routes([web.get("/v1/logs/{task_id}", self.task_logs)])
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int = NODE_LOG_PORT) -> None:
        tls = ca.server_context(self.creds, self.root_pem, require_client_cert=True)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=tls, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorize(self, request: web.Request) -> None:
        ssl_obj = request.transport.get_extra_info("ssl_object") if request.transport else None
        try:
            ca.require_role(ssl_obj, ca.Role.MANAGER, cluster_id=self.creds.cluster_id)  # chain: by TLS
        except (ca.PermissionDeniedError, ValueError, TypeError) as exc:
            raise web.HTTPForbidden(text=str(exc)) from None

    async def task_logs(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        q = request.query
        tail = q.get("tail", "all")
        opts = LogOptions(
            follow=q.get("follow") == "1",
            tail=None if tail == "all" else int(tail),
            stdout=q.get("stdout", "1") == "1",
            stderr=q.get("stderr", "1") == "1",
            since=float(q["since"]) if q.get("since") else None,
        )
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        async for e in worker_entries(node_worker(self.ctx), request.match_info["task_id"], opts):
            line = {"s": e.stream, "t": e.time, "d": base64.b64encode(e.data).decode()}
            await resp.write((json.dumps(line) + "\n").encode())
        await resp.write_eof()
        return resp


async def run_node_log_server(ctx: NodeContext) -> None:
    """Keep the log listener in step with the node's swarm membership (until cancelled)."""
    server: NodeLogServer | None = None
    bound: tuple[str, str] | None = None
    try:
        while True:
            swarm: Any = ctx.swarm
            state = getattr(swarm, "state", None)
            want = (state.advertise_ip, state.node_id) if state is not None else None
            if want != bound and server is not None:
                await server.stop()
                server, bound = None, None
            if want is not None and server is None:
                loaded = _credentials(ctx.config.state_dir)
                if loaded is not None:
                    candidate = NodeLogServer(ctx, *loaded)
                    try:
                        await candidate.start(want[0])
                        server, bound = candidate, want
                    except OSError as exc:
                        log.warning("cannot serve task logs on %s:%d: %s", want[0], NODE_LOG_PORT, exc)
                        await candidate.stop()
            await asyncio.sleep(CHECK_INTERVAL_S)
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()


async def fetch_remote(
    ctx: NodeContext, addr: str, task_id: str, opts: LogOptions
) -> AsyncIterator[LogEntry]:
    """One task's log lines from the node at ``addr`` (its IP), as this manager."""
    loaded = _credentials(ctx.config.state_dir)
    if loaded is None:
        return
    tls = ca.client_context(*loaded)
    host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr
    url = f"https://{host}:{NODE_LOG_PORT}/v1/logs/{task_id}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, params=opts.query(), ssl=tls) as resp,
    ):
        if resp.status != 200:
            log.warning("logs of task %s from %s: HTTP %d", task_id, host, resp.status)
            return
        async for raw in resp.content:
            try:
                obj = json.loads(raw)
                yield LogEntry(str(obj["s"]), str(obj["t"]), base64.b64decode(obj["d"]))
            except (ValueError, KeyError, TypeError):
                continue
