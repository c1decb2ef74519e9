"""What every cluster-state handler (swarm, nodes, secrets, networks, services, tasks) shares.

* :func:`require_manager` answers Docker's three "not a swarm manager" refusals (dockerd's
  ``errNoManager``) for nodes in no swarm, workers, and managers still starting;
* :func:`cluster_route` wraps a handler ``(request, manager)``: on a follower it forwards the request
  to the leader (``agents.api.forwarding``), on the leader it runs it, and it turns manager and store
  errors into Docker's HTTP answers (:func:`manager_api_error`, :func:`store_api_error`);
* :func:`commit` replicates a finished transaction and raises Docker's error if the store refuses it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agents.api import forwarding
from agents.api.errors import ApiError, Conflict, InvalidParameter, NotFound, Unavailable
from agents.api.server import node_context
from agents.manager.errors import NOT_MANAGER_MSG, ManagerError, NotLeader
from agents.state.errors import Ambiguous, NameConflict, SequenceConflict, StoreError
from agents.state.errors import NotFound as StoreNotFound
from agents.state.objects import StoreObject

if TYPE_CHECKING:
    from agents.manager.manager import Manager
    from agents.state.tx import Tx
    from agents.swarmnode import SwarmNode

NOT_IN_SWARM_MSG = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node '
    "to swarm and try again."
)
MANAGER_NOT_READY_MSG = (
    "This node is not a swarm manager. Manager is being prepared or has trouble connecting to the cluster."
)
OUT_OF_SEQUENCE_MSG = "rpc error: code = Unknown desc = update out of sequence"

ClusterHandler = Callable[[web.Request, "Manager"], Awaitable[web.StreamResponse]]


def swarm_of(request: web.Request) -> SwarmNode | None:
    """This agent's SwarmNode (None in bare test apps that have no swarm side)."""
    swarm: Any = node_context(request).swarm
    return swarm if swarm is not None and hasattr(swarm, "state") else None


def in_swarm(request: web.Request) -> bool:
    swarm = swarm_of(request)
    return swarm is not None and swarm.state is not None


def require_manager(swarm: SwarmNode | None) -> Manager:
    """The node's running manager, or Docker's 503 saying why there is none."""
    if swarm is None or swarm.state is None:
        raise Unavailable(NOT_IN_SWARM_MSG)
    manager = swarm.manager
    if manager is None:
        raise Unavailable(NOT_MANAGER_MSG if swarm.state.role != "manager" else MANAGER_NOT_READY_MSG)
    return manager


def manager_api_error(e: ManagerError) -> ApiError:
    return ApiError(e.status, e.message)


def store_api_error(e: StoreError) -> ApiError:
    """SwarmKit store errors as dockerd relays them (gRPC code -> HTTP status)."""
    if isinstance(e, SequenceConflict):
        return ApiError(500, OUT_OF_SEQUENCE_MSG)
    if isinstance(e, NameConflict):
        return Conflict(str(e))
    if isinstance(e, StoreNotFound):
        return NotFound(str(e))
    if isinstance(e, Ambiguous):
        return InvalidParameter(str(e))
    return ApiError(500, f"rpc error: code = Unknown desc = {e}")


async def commit(manager: Manager, tx: Tx) -> None:
    """Replicate what ``tx`` recorded (nothing if empty); a refused changeset becomes Docker's error."""
    if tx.changeset is None or not tx.changeset.ops:
        return
    result = await manager.commit(tx.changeset)
    if not result.ok:
        assert result.error is not None
        raise store_api_error(result.error)


async def delete_object(manager: Manager, kind: type[StoreObject], oid: str, attempts: int = 5) -> None:
    """Delete without a user-supplied version (`docker network/secret/node rm`): a version conflict only
    means a control loop (allocator, dispatcher) wrote the object first, so re-read and try again."""
    for attempt in range(attempts):
        with manager.store.batch() as tx:
            if manager.store.get(kind, oid) is None:
                return
            tx.delete(kind, oid)
        try:
            await commit(manager, tx)
            return
        except ApiError as e:
            if e.message != OUT_OF_SEQUENCE_MSG or attempt == attempts - 1:
                raise


def cluster_route(handler: ClusterHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run ``handler`` on the leader; a follower forwards the whole request there (see forwarding)."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        swarm = swarm_of(request)
        manager = require_manager(swarm)
        assert swarm is not None
        replayed = forwarding.is_forwarded(request)
        if not manager.is_leader:
            if replayed:
                return forwarding.misdirected(manager)
            return await forwarding.forward(request, swarm, manager)
        try:
            return await handler(request, manager)
        except NotLeader:  # leadership moved before our commit: nothing was written, ask the new leader
            if replayed:
                return forwarding.misdirected(manager)
            return await forwarding.forward(request, swarm, manager)
        except ManagerError as e:
            raise manager_api_error(e) from None
        except StoreError as e:
            raise store_api_error(e) from None

    return wrapper


def version_param(request: web.Request, what: str) -> int:
    """The required ``?version=N`` of an update, parsed as dockerd does (``invalid node version 'x'…``)."""
    raw = request.query.get("version", "")
    try:
        value = int(raw, 10)
        if value < 0:
            raise ValueError
    except ValueError:
        raise InvalidParameter(
            f"invalid {what} version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax"
        ) from None
    return value


def check_filters(filters: dict[str, list[str]], accepted: set[str]) -> None:
    """dockerd's ``filters.Validate``: an unknown filter name is a 400."""
    for name in filters:
        if name not in accepted:
            raise InvalidParameter(f"invalid filter '{name}'")


def kv_filter(values: list[str]) -> dict[str, str]:
    """``label=a=b`` / ``label=a`` values as a map (value "" matches any)."""
    out: dict[str, str] = {}
    for v in values:
        key, _, val = v.partition("=")
        out[key] = val
    return out


def labels_match(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(k in labels and (v == "" or labels[k] == v) for k, v in wanted.items())
