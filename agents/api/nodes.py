"""The /nodes endpoints: list (with dockerd's filters), inspect, update (spec only) and remove.

A role change (``docker node promote/demote``) is only recorded as the desired role here; the role
manager on the leader reconciles Raft membership. SwarmKit's refusals (last manager, quorum, removing
a node that is up or still a manager) come from ``agents.manager.membership``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agents.api.cluster import (
    check_filters,
    cluster_route,
    commit,
    delete_object,
    kv_filter,
    labels_match,
    version_param,
)
from agents.api.convert import node_json
from agents.api.errors import InvalidParameter
from agents.api.httputil import (
    expect_type,
    json_response,
    optional_field,
    query_bool,
    query_filters,
    read_json_object,
)
from agents.api.routing import RouteTable
from agents.manager.errors import FailedPrecondition
from agents.manager.manager import Manager
from agents.manager.membership import check_demote, check_remove, managers
from agents.state.objects import Cluster, Node, NodeAvailability, NodeRole, NodeSpec

routes = RouteTable("nodes")

NODE_FILTERS = {"id", "label", "membership", "name", "node.label", "role"}


def _cluster(manager: Manager) -> Cluster | None:
    clusters = manager.store.list(Cluster)
    return clusters[0] if clusters else None


def _matcher(filters: dict[str, list[str]]) -> Any:
    check_filters(filters, NODE_FILTERS)
    roles = set()
    for r in filters.get("role", []):
        if r.lower() in ("manager", "worker"):
            roles.add(r.lower())
        elif r:
            raise InvalidParameter(f"Invalid role filter: '{r}'")
    for m in filters.get("membership", []):
        if m and m.lower() not in ("accepted", "pending"):
            raise InvalidParameter(f"Invalid membership filter: '{m}'")
    memberships = {m.lower() for m in filters.get("membership", []) if m}
    names, ids = filters.get("name", []), filters.get("id", [])
    engine_labels, node_labels = kv_filter(filters.get("label", [])), kv_filter(filters.get("node.label", []))

    def match(n: Node) -> bool:
        if names and not any(n.spec.name.startswith(p) or n.description.hostname.startswith(p) for p in names):
            return False
        if ids and not any(n.id.startswith(p) for p in ids):
            return False
        if roles and n.role.value not in roles:
            return False
        if memberships and "accepted" not in memberships:
            return False  # every node here has been admitted (joins are accepted at once)
        if engine_labels and not labels_match(n.description.engine.labels, engine_labels):
            return False
        return not node_labels or labels_match(n.spec.labels, node_labels)

    return match


@routes.get("/nodes")
@cluster_route
async def list_nodes(request: web.Request, manager: Manager) -> web.StreamResponse:
    match = _matcher(query_filters(request))
    cluster = _cluster(manager)
    return json_response([node_json(n, cluster) for n in manager.store.list(Node) if match(n)])


@routes.get("/nodes/{id}")
@cluster_route
async def inspect_node(request: web.Request, manager: Manager) -> web.StreamResponse:
    node = manager.store.find(Node, request.match_info["id"])
    return json_response(node_json(node, _cluster(manager)))


@routes.delete("/nodes/{id}")
@cluster_route
async def remove_node(request: web.Request, manager: Manager) -> web.StreamResponse:
    node = manager.store.find(Node, request.match_info["id"])
    check_remove(manager.store, node, query_bool(request, "force"))
    await delete_object(manager, Node, node.id)
    return web.Response(status=200)


def parse_node_spec(data: dict[str, Any]) -> NodeSpec:
    """A NodeSpec body as moby's ``NodeSpecToGRPC``: Role and Availability must be valid values."""
    labels = optional_field(data, "Labels", dict, {})
    role = optional_field(data, "Role", str, "")
    availability = optional_field(data, "Availability", str, "")
    try:
        node_role = NodeRole(role.lower())
    except ValueError:
        raise InvalidParameter(f'invalid Role: "{role}"') from None
    try:
        node_availability = NodeAvailability(availability.lower())
    except ValueError:
        raise InvalidParameter(f'invalid Availability: "{availability}"') from None
    return NodeSpec(
        name=optional_field(data, "Name", str, ""),
        labels={str(k): expect_type(v, str, f"Labels.{k}") for k, v in labels.items()},
        role=node_role,
        availability=node_availability,
    )


@routes.post("/nodes/{id}/update")
@cluster_route
async def update_node(request: web.Request, manager: Manager) -> web.StreamResponse:
    version = version_param(request, "node")
    spec = parse_node_spec(await read_json_object(request))
    node = manager.store.find(Node, request.match_info["id"])
    if node.spec.role is NodeRole.MANAGER and spec.role is NodeRole.WORKER:
        # Count demotions asked for but not yet carried out too (`docker node demote a b` in one go).
        if not any(m.id != node.id and m.spec.role is NodeRole.MANAGER for m in managers(manager.store)):
            raise FailedPrecondition("attempting to demote the last manager of the swarm")
        check_demote(manager.store, node)
    with manager.store.batch() as tx:
        updated = node.copy()
        updated.meta.version = version
        updated.spec = spec
        tx.update(updated)
    await commit(manager, tx)
    return web.Response(status=200)

