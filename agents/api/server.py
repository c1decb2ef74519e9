"""The Docker Engine API server: app factory, route registration and the unix-socket listener.

Later issues add an area by writing ``agents/api/<area>.py`` with a module-level
``routes = RouteTable("<area>")`` and listing the module in :data:`AREAS`; handlers reach the node's
state with :func:`node_context`. Tests can pass their own tables to :func:`build_app`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from agents.api.middleware import add_standard_headers, error_middleware, version_middleware
from agents.api.routing import Handler, RouteTable
from agents.context import NodeContext

log = logging.getLogger("labagent.api")

AREAS: tuple[str, ...] = (
    "agents.api.system",
    "agents.api.swarm",
    "agents.api.nodes",
    "agents.api.secrets",
    "agents.api.networks",
    "agents.api.services",
    "agents.api.tasks",
    "agents.api.logs",
    "agents.api.containers",
    "agents.api.execs",
    "agents.api.images",
)
"""Modules (each with a module-level ``routes: RouteTable``) served by default, in order."""

VERSION_PREFIX = "/v{version:[0-9.]+}"
"""dockerd's versionMatcher; the middleware validates what it captures."""

CLIENT_MAX_SIZE = 16 * 1024 * 1024
"""Largest request body accepted (service specs, secrets and configs are far smaller)."""

MAX_HEADER_BYTES = 1 << 20
"""Longest request line or header field: Go's ``http.DefaultMaxHeaderBytes``, which dockerd uses. aiohttp's
8 KiB default would answer a long object reference in the path with a plain-text 400 (and a logged
traceback) instead of Docker's JSON 404."""

SOCKET_MODE = 0o660

ACCESS_LOG_FORMAT = '"%r" %s %b %Tfs "%{User-Agent}i"'
"""Unix-socket peers have no address, so aiohttp's default format would start with a blank."""

NODE_CONTEXT = web.AppKey("node_context", NodeContext)


def node_context(request: web.Request) -> NodeContext:
    """The :class:`NodeContext` of the agent serving ``request``."""
    return request.app[NODE_CONTEXT]


def default_routers() -> list[RouteTable]:
    """The route tables of every module in :data:`AREAS` (imported here, not at start-up)."""
    return [importlib.import_module(name).routes for name in AREAS]


def register_routes(app: web.Application, tables: Iterable[RouteTable]) -> None:
    """Add every route of ``tables`` under ``/v{version}`` and unprefixed; duplicates are an error."""
    by_path: dict[str, dict[str, tuple[RouteTable, Handler]]] = {}
    for table in tables:
        for route in table:
            methods = by_path.setdefault(route.path, {})
            if route.method in methods:
                raise ValueError(
                    f"route {route.method} {route.path} is declared by both "
                    f"{methods[route.method][0].area!r} and {table.area!r}"
                )
            methods[route.method] = (table, route.handler)
    for path, methods in by_path.items():
        for full_path in (VERSION_PREFIX + path, path):
            resource = app.router.add_resource(full_path)
            for method, (_, handler) in methods.items():
                resource.add_route(method, handler)


def build_app(ctx: NodeContext, routers: Iterable[RouteTable] | None = None) -> web.Application:
    """The aiohttp app serving ``routers`` (default: :func:`default_routers`) for node ``ctx``."""
    app = web.Application(
        middlewares=[error_middleware, version_middleware], client_max_size=CLIENT_MAX_SIZE
    )
    app[NODE_CONTEXT] = ctx
    app.on_response_prepare.append(add_standard_headers)
    register_routes(app, default_routers() if routers is None else routers)
    return app


# --- the unix socket ------------------------------------------------------------------------------


class SocketInUse(RuntimeError):
    """The socket path is held by a live daemon or by something that is not a socket."""


def _is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # e.g. a timeout: someone is there but busy; never steal their socket
    else:
        return True
    finally:
        probe.close()


def bind_unix_socket(path: Path, mode: int = SOCKET_MODE) -> socket.socket:
    """A bound (not yet listening) unix socket at ``path`` with ``mode``; a stale socket is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
        if _is_live(path):
            raise SocketInUse(f"another daemon is already listening on {path}")
        log.info("removing stale socket %s", path)
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # never visible with looser permissions, even briefly
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    _chown_to_docker_group(path)
    return sock


def _chown_to_docker_group(path: Path) -> None:
    """Like dockerd: the socket belongs to group "docker" when that group exists."""
    import grp

    try:
        gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        return
    with contextlib.suppress(OSError):
        os.chown(path, -1, gid)


class ApiServer:
    """A running API server on a unix socket; :meth:`close` stops it and removes the socket."""

    def __init__(self, runner: web.AppRunner, path: Path, inode: tuple[int, int]) -> None:
        self.runner = runner
        self.path = path
        self._inode = inode

    @classmethod
    async def start(
        cls, app: web.Application, path: Path, *, access_log: logging.Logger | None = None
    ) -> ApiServer:
        sock = bind_unix_socket(path)
        st = os.stat(path)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=access_log,
            access_log_format=ACCESS_LOG_FORMAT,
            shutdown_timeout=2.0,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            _unlink_if_same(path, (st.st_dev, st.st_ino))
            raise
        return cls(runner, path, (st.st_dev, st.st_ino))

    async def close(self) -> None:
        """Stop listening, finish in-flight requests (briefly) and remove our socket file."""
        try:
            await self.runner.cleanup()
        finally:
            _unlink_if_same(self.path, self._inode)


def _unlink_if_same(path: Path, inode: tuple[int, int]) -> None:
    """Remove ``path`` only if it is still the socket we created (a successor may own it now)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if (st.st_dev, st.st_ino) == inode:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
