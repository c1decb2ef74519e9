"""Task endpoints: what ``docker service ps`` and ``docker node ps`` read.

``GET /tasks`` takes dockerd's filters (``service`` and ``node`` by id or name, ``name``/``id`` prefixes,
``label``, ``desired-state``, and the CLI's hidden ``_up-to-date`` used by the convergence progress
bars). The CLI builds the NAME column (``web.1``) itself from the service name and slot, so tasks are
returned as SwarmKit stores them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from agents.api.convert import cluster_network_json
from agents.api.convert_services import task_json
from agents.api.errors import InvalidParameter
from agents.api.httputil import json_response, query_filters
from agents.api.routing import RouteTable
from agents.api.services import check_filters, find_service, labels_match
from agents.api.swarmaccess import cluster_read, store_api_error
from agents.state.errors import StoreError
from agents.state.objects import Network, Node, Service, Task, TaskState
from agents.state.store import Store

if TYPE_CHECKING:
    from agents.manager.manager import Manager

routes = RouteTable("tasks")

TASK_FILTERS = ("id", "name", "label", "service", "node", "desired-state", "_up-to-date", "runtime")
_STATES = {s.name.lower(): s for s in TaskState}


def find_task(store: Store, ref: str) -> Task:
    try:
        return store.find(Task, ref)
    except StoreError as exc:
        raise store_api_error(exc, "task", ref) from None


def find_node(store: Store, ref: str) -> Node:
    try:
        return store.find(Node, ref)
    except StoreError as exc:
        raise store_api_error(exc, "node", ref) from None


def network_json(store: Store, nid: str) -> dict[str, Any]:
    """The Network object inside a task's NetworksAttachments."""
    net = store.get(Network, nid)
    return {"ID": nid} if net is None else cluster_network_json(net)


_BODIES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
"""Task id -> (the versions its JSON was made of, that JSON): only the latest version of each task."""
_prune_at = 256


def task_body(store: Store, task: Task) -> dict[str, Any]:
    """A task's JSON, memoised by the versions it is made of: `docker service ps` and the CLI's progress
    display list every task of a service again and again, and a stored version never changes. One entry
    per task, so the memo is as big as the task list (tasks the reaper deleted are pruned whenever it has
    doubled). The returned dict is shared: callers serialise it and must not modify it."""
    global _prune_at
    net_versions = []
    for a in task.networks:
        net = store.get(Network, a.network_id)
        net_versions.append((a.network_id, net.meta.version if net is not None else 0))
    key = (task.meta.version, tuple(net_versions))
    hit = _BODIES.get(task.id)
    if hit is not None and hit[0] == key:
        return hit[1]
    nets = {a.network_id: network_json(store, a.network_id) for a in task.networks}
    body = task_json(task, nets)
    _BODIES[task.id] = (key, body)
    if len(_BODIES) >= _prune_at:
        for gone in [tid for tid in _BODIES if store.get(Task, tid) is None]:
            del _BODIES[gone]
        _prune_at = max(256, 2 * len(_BODIES))
    return body


def _up_to_date(store: Store, task: Task) -> bool:
    svc = store.get(Service, task.service_id)
    if svc is None:
        return False
    try:
        from agents.manager.orchestrator.tasks import is_task_dirty
    except ImportError:
        return task.spec_version == svc.spec_version
    return not is_task_dirty(svc, task, store.get(Node, task.node_id))


def select_tasks(store: Store, filters: dict[str, list[str]]) -> list[Task]:
    """The tasks matching dockerd's task filters (service/node references must exist)."""
    check_filters(filters, TASK_FILTERS)
    desired: set[TaskState] = set()
    for value in filters.get("desired-state", []):
        state = _STATES.get(value.lower())
        if state is None:
            if value:
                raise InvalidParameter(f"Invalid task desired state: {value}")
            continue
        desired.add(state)
    tasks: list[Task]
    if "service" in filters:
        ids = {find_service(store, ref).id for ref in filters["service"]}
        tasks = [t for sid in ids for t in store.tasks_by_service(sid)]
    else:
        tasks = store.list(Task)
    if "node" in filters:
        nodes = {find_node(store, ref).id for ref in filters["node"]}
        tasks = [t for t in tasks if t.node_id in nodes]
    if "id" in filters:
        tasks = [t for t in tasks if any(t.id.startswith(v) for v in filters["id"])]
    if "name" in filters:
        tasks = [t for t in tasks if any(t.annotations.name.startswith(v) for v in filters["name"])]
    if "label" in filters:
        tasks = [t for t in tasks if labels_match(t.annotations.labels, filters["label"])]
    if desired:
        tasks = [t for t in tasks if t.desired_state in desired]
    if filters.get("_up-to-date"):
        tasks = [t for t in tasks if _up_to_date(store, t)]
    return tasks


@routes.get("/tasks")
@cluster_read
async def list_tasks(request: web.Request, manager: Manager) -> web.StreamResponse:
    store = manager.store
    return json_response([task_body(store, t) for t in select_tasks(store, query_filters(request))])


@routes.get("/tasks/{id}")
@cluster_read
async def inspect_task(request: web.Request, manager: Manager) -> web.StreamResponse:
    store = manager.store
    return json_response(task_body(store, find_task(store, request.match_info["id"])))
