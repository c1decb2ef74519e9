"""Service endpoints: ``docker service create/ls/inspect/update/rollback/scale/rm``.

Follows moby's ``api/server/router/swarm`` and ``daemon/cluster/services.go`` in front of SwarmKit's
control API: the body is converted (``convert_services``), checked with SwarmKit's rules and texts
(``agents.state.validate``, constraints, secret and network references, published-port conflicts) and
committed through Raft on the leader, with the endpoint (VIPs, auto-assigned ports) already allocated by
the leader's allocator (``endpoint_inline``) so that no later write makes the version a client just read
stale; the orchestrators take it from the store. Image references are
not resolved here: the CLI pins them through ``GET /distribution`` (``images.py``) and unknown images
are accepted, their tasks then fail with "No such image" on the node, as with Docker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from agents.api import namesgen
from agents.api.cluster import version_param
from agents.api.convert_services import parse_service_spec, service_json
from agents.api.errors import ApiError, InvalidParameter, NotFound
from agents.api.httputil import json_response, query_bool, query_filters, read_json_object
from agents.api.routing import RouteTable
from agents.api.swarmaccess import OUT_OF_SEQUENCE_MSG, cluster_read, cluster_write, commit, store_api_error
from agents.manager.allocator import endpoint_inline
from agents.manager.updater import apply_rollback, apply_spec_update
from agents.state.errors import StoreError
from agents.state.objects import Node, NodeState, Service, ServiceMode, ServiceSpec, TaskState, new_id
from agents.state.store import Store
from agents.state.validate import invalid_argument, validate_service_spec

if TYPE_CHECKING:
    from agents.manager.manager import Manager

routes = RouteTable("services")

SERVICE_FILTERS = ("id", "label", "mode", "name")
DELETE_ATTEMPTS = 5
"""``docker service rm`` carries no version: retry when the control loops updated the service first."""


# ------------------------------------------------------------------------------------------ lookups


def find_service(store: Store, ref: str) -> Service:
    """Full id, then exact name, then unique id prefix (dockerd's ``getService``)."""
    try:
        return store.find(Service, ref)
    except StoreError as exc:
        raise store_api_error(exc, "service", ref) from None


def check_filters(filters: dict[str, list[str]], accepted: tuple[str, ...]) -> None:
    for name in filters:
        if name not in accepted:
            raise InvalidParameter(f"invalid filter '{name}'")


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """``label=key`` or ``label=key=value`` filters; all must match."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


# --------------------------------------------------------------------------------------- validation


def check_spec(store: Store, spec: ServiceSpec, service_id: str | None = None) -> None:
    """SwarmKit's create/update checks, with its texts; resolves secret and network references in place."""
    err = validate_service_spec(spec)
    if err is not None:
        raise InvalidParameter(err)
    _check_image(spec.task_template.container.image)
    _check_constraints(spec.task_template.placement.constraints)
    _resolve_secrets(store, spec)
    _resolve_networks(store, spec)
    _check_ports(store, spec, service_id)


def _check_image(image: str) -> None:
    from agents.worker.images.catalog import InvalidReference, normalize

    try:
        normalize(image)
    except InvalidReference:
        raise InvalidParameter(invalid_argument(f'ContainerSpec: "{image}" is not a valid repository/tag')) from None


def _check_constraints(constraints: list[str]) -> None:
    try:
        from agents.manager.scheduler.constraints import parse_constraints
    except ImportError:  # the scheduler is not in the tree: constraints are checked when it lands
        return
    try:
        parse_constraints(constraints)
    except ValueError as exc:
        raise InvalidParameter(invalid_argument(str(exc))) from None


def _resolve_secrets(store: Store, spec: ServiceSpec) -> None:
    from agents.state.objects import Secret

    targets: dict[str, str] = {}
    for ref in spec.task_template.container.secrets:
        wanted = ref.secret_id or ref.secret_name
        if not wanted:
            raise InvalidParameter(invalid_argument("malformed secret reference"))
        try:
            secret = store.find(Secret, wanted)
        except StoreError:
            raise InvalidParameter(invalid_argument(f"secret not found: {wanted}")) from None
        ref.secret_id, ref.secret_name = secret.id, secret.spec.name
        ref.file_name = ref.file_name or secret.spec.name
        other = targets.get(ref.file_name)
        if other is not None:
            raise InvalidParameter(
                invalid_argument(
                    f"secret references '{other}' and '{ref.secret_name}' have a conflicting target: '{ref.file_name}'"
                )
            )
        targets[ref.file_name] = ref.secret_name


def _resolve_networks(store: Store, spec: ServiceSpec) -> None:
    from agents.state.objects import Network

    for att in spec.task_template.networks:
        try:
            net = store.find(Network, att.target)
        except StoreError:
            raise NotFound(f"network {att.target} not found") from None
        if net.spec.ingress:
            raise InvalidParameter(
                invalid_argument(f'Service cannot be explicitly attached to the ingress network "{net.spec.name}"')
            )
        att.target = net.id


def _check_ports(store: Store, spec: ServiceSpec, service_id: str | None) -> None:
    try:
        from agents.manager.allocator import PortConflictError, check_ports
    except ImportError:  # the allocator is not in the tree yet: conflicts are not detected
        return
    try:
        check_ports(store, spec, service_id)
    except PortConflictError as exc:
        raise InvalidParameter(invalid_argument(str(exc))) from None


# ------------------------------------------------------------------------------------------- status


def service_status(store: Store, svc: Service) -> dict[str, int]:
    """ServiceStatus as dockerd computes it: running tasks on nodes that are not down; desired tasks
    from the replica count (replicated) or the tasks meant to run (global)."""
    running = desired_global = completed = 0
    for t in store.tasks_by_service(svc.id):
        if t.status.state == TaskState.COMPLETE:
            completed += 1
        if t.desired_state <= TaskState.RUNNING or t.desired_state == TaskState.COMPLETE:
            desired_global += 1
        if t.status.state == TaskState.RUNNING and t.desired_state <= TaskState.RUNNING:
            node = store.get(Node, t.node_id)
            if node is not None and node.status.state != NodeState.DOWN:
                running += 1
    mode = svc.spec.mode
    if mode is ServiceMode.REPLICATED:
        desired = svc.spec.replicas
    elif mode is ServiceMode.REPLICATED_JOB:
        desired = min(svc.spec.max_concurrent, max(0, svc.spec.total_completions - completed))
    else:
        desired = desired_global
    return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}


# ----------------------------------------------------------------------------------------- handlers


@routes.get("/services")
@cluster_read
async def list_services(request: web.Request, manager: Manager) -> web.StreamResponse:
    filters = query_filters(request)
    check_filters(filters, SERVICE_FILTERS)
    for mode in filters.get("mode", []):
        if mode not in ("replicated", "global", "replicated-job", "global-job"):
            raise InvalidParameter(f"Invalid filter: 'mode={mode}'")
    status = query_bool(request, "status")
    store = manager.store
    out = []
    for svc in store.list(Service):
        if "id" in filters and not any(svc.id.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(svc.spec.name.startswith(v) for v in filters["name"]):
            continue
        if "mode" in filters and svc.spec.mode.value not in filters["mode"]:
            continue
        if "label" in filters and not labels_match(svc.spec.labels, filters["label"]):
            continue
        body = service_json(svc)
        if status:
            body["ServiceStatus"] = service_status(store, svc)
        out.append(body)
    return json_response(out)


@routes.post("/services/create")
@cluster_write
async def create_service(request: web.Request, manager: Manager) -> web.StreamResponse:
    spec = parse_service_spec(await read_json_object(request))
    store = manager.store
    if not spec.name:
        spec.name = namesgen.unique_name(lambda n: bool(store.by_name(Service, n)))
    check_spec(store, spec)
    # The id is picked here, not by tx.create, so the endpoint is allocated for its real owner and the
    # service is written once with it: no later allocator write makes the client's version stale.
    try:
        with endpoint_inline(store, Service(id=new_id(), spec=spec)) as svc:
            with store.batch() as tx:
                tx.create(svc)
            await commit(manager, tx)
    except StoreError as exc:
        raise store_api_error(exc) from None
    return json_response({"ID": svc.id, "Warnings": []}, status=201)


@routes.get("/services/{id}")
@cluster_read
async def inspect_service(request: web.Request, manager: Manager) -> web.StreamResponse:
    # insertDefaults needs nothing extra: the store always holds the defaults Docker would insert.
    query_bool(request, "insertDefaults")
    return json_response(service_json(find_service(manager.store, request.match_info["id"])))


@routes.post("/services/{id}/update")
@cluster_write
async def update_service(request: web.Request, manager: Manager) -> web.StreamResponse:
    version = version_param(request, "service")
    rollback = request.query.get("rollback", "")
    if rollback not in ("", "none", "previous"):
        raise InvalidParameter(f"unrecognized rollback option {rollback}")
    body = await read_json_object(request)
    store = manager.store
    current = find_service(store, request.match_info["id"])
    if rollback == "previous":
        try:
            updated = apply_rollback(current, store.clock())
        except ValueError:
            raise InvalidParameter(
                f"rpc error: code = FailedPrecondition desc = service {current.id} does not have a previous spec"
            ) from None
    else:
        spec = parse_service_spec(body)
        if spec.name != current.spec.name:
            raise ApiError(501, "rpc error: code = Unimplemented desc = renaming services is not supported")
        if spec.mode != current.spec.mode:
            raise ApiError(501, "rpc error: code = Unimplemented desc = service mode change is not allowed")
        check_spec(store, spec, current.id)
        updated = apply_spec_update(current, spec)
    updated.meta.version = version
    try:
        with endpoint_inline(store, updated) as updated:  # new ports/networks: allocated in this write
            with store.batch() as tx:
                tx.update(updated)
            await commit(manager, tx)
    except StoreError as exc:
        raise store_api_error(exc) from None
    return json_response({"Warnings": []})


@routes.delete("/services/{id}")
@cluster_write
async def remove_service(request: web.Request, manager: Manager) -> web.StreamResponse:
    store = manager.store
    ref = request.match_info["id"]
    for attempt in range(DELETE_ATTEMPTS):
        svc = find_service(store, ref)
        try:
            with store.batch() as tx:
                tx.delete(Service, svc.id)
            await commit(manager, tx)
            break
        except StoreError as exc:
            raise store_api_error(exc, "service", svc.id) from None
        except ApiError as exc:  # the control loops wrote the service meanwhile: read it again
            if exc.message != OUT_OF_SEQUENCE_MSG or attempt == DELETE_ATTEMPTS - 1:
                raise
    return web.Response(status=200)
