"""A real API server on a unix socket (own event loop in a thread) and a tiny blocking HTTP client.

A real socket rather than aiohttp's in-process test client so the tests see the bytes dockerd's clients
see (status line, headers such as Content-Length on HEAD, exact Content-Type).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.api.routing import RouteTable
from agents.api.server import ApiServer, build_app
from agents.config import AgentConfig
from agents.context import NodeContext


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    sock: Path, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    conn = _UnixHTTPConnection(str(sock))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


class ServerThread:
    """Runs ``build_app(ctx, routers)`` on ``sock`` in a private loop; :meth:`request` talks to it."""

    def __init__(self, ctx: NodeContext, routers: Iterable[RouteTable] | None = None) -> None:
        self.ctx = ctx
        self.sock = ctx.config.socket_path
        self._routers = list(routers) if routers is not None else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: ApiServer | None = None

    def start(self) -> ServerThread:
        self._thread.start()
        app = build_app(self.ctx, self._routers)
        self._server = asyncio.run_coroutine_threadsafe(ApiServer.start(app, self.sock), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        return http_request(self.sock, method, path, body, headers)


def make_ctx(root: Path, node_name: str = "manager1") -> NodeContext:
    state = root / "state"
    state.mkdir(parents=True, exist_ok=True)
    cfg = AgentConfig(node_name=node_name, state_dir=state, socket_path=root / "docker.sock")
    return NodeContext.create(cfg)
