"""How the service, task and log endpoints reach the manager, on top of ``agents.api.cluster``.

* writes (:data:`cluster_write`) are the shared :func:`agents.api.cluster.cluster_route`: run on the
  leader, forwarded there by followers, manager/store errors turned into Docker's answers;
* reads (:func:`cluster_read`) are served by any manager after a Raft read barrier (linearizable, like
  SwarmKit's proxy to the leader): a follower must not buffer a ``--follow`` log stream through the
  request/response forwarding hop, and a plain list needs no extra hop either.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from agents.api import cluster
from agents.api.cluster import OUT_OF_SEQUENCE_MSG, ClusterHandler, commit, manager_api_error
from agents.api.errors import ApiError
from agents.manager.errors import ManagerError
from agents.state.errors import NotFound, StoreError

__all__ = ["OUT_OF_SEQUENCE_MSG", "cluster_read", "cluster_write", "commit", "store_api_error"]

cluster_write = cluster.cluster_route


def store_api_error(exc: StoreError, kind: str = "", ref: str = "") -> ApiError:
    """The shared mapping, with dockerd's "<kind> <ref> not found" for a failed lookup."""
    if kind and isinstance(exc, NotFound) and str(exc) == NotFound().args[0]:
        return ApiError(404, f"{kind} {ref} not found")
    return cluster.store_api_error(exc)


def cluster_read(fn: ClusterHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that only reads cluster state: any manager, after a read barrier on followers."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.StreamResponse:
        manager = cluster.require_manager(cluster.swarm_of(request))
        try:
            if not manager.is_leader:
                await manager.read_barrier()
            return await fn(request, manager)
        except ManagerError as exc:
            raise manager_api_error(exc) from None
        except StoreError as exc:
            raise store_api_error(exc) from None

    return handler
