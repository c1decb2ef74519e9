"""Route tables: how each API area (system, swarm, nodes, services, ...) declares its endpoints.

An area module builds one :class:`RouteTable` at import time and decorates its handlers::

    routes = RouteTable("nodes")

    @routes.get("/nodes/{id}")
    async def inspect_node(request: web.Request) -> web.StreamResponse: ...

``agents.api.server.build_app`` registers every table twice per path, as dockerd does: under
``/v{version}`` and unprefixed. Paths use aiohttp's syntax (``{name}``, ``{name:regex}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler


class RouteTable:
    """An ordered list of routes for one API area; decorators return the handler unchanged."""

    def __init__(self, area: str) -> None:
        self.area = area
        self._routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"RouteTable({self.area!r}, {len(self._routes)} routes)"

    def add(self, method: str, path: str, handler: Handler) -> None:
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"{self.area}: unsupported method {method!r} for {path}")
        if not path.startswith("/") or path.startswith("/v{"):
            raise ValueError(f"{self.area}: route path must start with '/' and carry no version: {path!r}")
        if any(r.method == method and r.path == path for r in self._routes):
            raise ValueError(f"{self.area}: duplicate route {method} {path}")
        self._routes.append(Route(method, path, handler))

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(method, path, handler)
            return handler

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        """GET only: like dockerd, a HEAD on a GET route is 404 unless :meth:`head` adds it."""
        return self.route("GET", path)

    def head(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("HEAD", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("PUT", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path)
