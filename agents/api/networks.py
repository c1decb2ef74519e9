"""The /networks endpoints: the node's own networks plus the swarm's overlay networks.

Every engine has ``bridge``, ``host`` and ``none`` (and ``docker_gwbridge`` once in a swarm); this agent
runs containers only as swarm tasks, so those are fixed, read-only entries. Overlay networks are
cluster objects: created and removed through the leader (followers forward), listed from the manager's
replica after a read barrier so a manager lists what the leader has. Texts follow dockerd 26
(``api/server/router/network``, ``daemon/cluster/networks.go``) and SwarmKit's controlapi.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from aiohttp import web

from agents.api.cluster import (
    NOT_IN_SWARM_MSG,
    check_filters,
    cluster_route,
    commit,
    delete_object,
    kv_filter,
    labels_match,
    swarm_of,
)
from agents.api.convert import (
    GWBRIDGE,
    PREDEFINED_NETWORKS,
    attached_network_json,
    cluster_network_json,
    local_networks,
)
from agents.api.errors import ApiError, Conflict, InvalidParameter, NotFound
from agents.api.httputil import expect_type, json_response, optional_field, query_filters, read_json_object
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.manager.allocator import needs_ingress
from agents.manager.errors import ManagerError
from agents.manager.manager import Manager
from agents.state.objects import IPAMConfig, Network, NetworkSpec, Service, Task
from agents.state.validate import invalid_argument, validate_network_name

routes = RouteTable("networks")

NETWORK_FILTERS = {"dangling", "driver", "id", "label", "name", "scope", "type"}
WORKER_CREATE_MSG = "Cannot create a multi-host network from a worker node. Please create the network from a manager node."
LOCAL_DRIVERS = {"bridge", "macvlan", "ipvlan"}
SINGLETON_DRIVERS = {"host", "null"}
JSON = dict[str, Any]


# ------------------------------------------------------------------------------------------ sources


def _local_created(request: web.Request) -> float:
    ctx = node_context(request)
    try:
        return os.stat(ctx.config.state_dir / "engine-id").st_mtime
    except OSError:
        return ctx.started_at


def _local(request: web.Request) -> list[JSON]:
    ctx = node_context(request)
    swarm = swarm_of(request)
    return local_networks(ctx.engine_id, _local_created(request), swarm is not None and swarm.state is not None)


async def _cluster(request: web.Request) -> list[JSON]:
    """The swarm's networks as this manager's replica has them (empty on workers / without quorum)."""
    swarm = swarm_of(request)
    manager = swarm.manager if swarm is not None else None
    if manager is None:
        return []
    try:
        if not manager.is_leader:
            await manager.read_barrier()
    except ManagerError:
        return []  # as dockerd: without the cluster, the list still shows the node's own networks
    return [cluster_network_json(n) for n in manager.store.list(Network) if not n.pending_delete]


def _attached(request: web.Request) -> list[JSON]:
    """On a worker: the swarm networks this node takes part in, as dockerd lists them there: ``ingress``
    (every node has its sandbox), and an overlay network only while a task of this node is attached to
    it (so it appears with the first task, with the cluster's id)."""
    swarm = swarm_of(request)
    if swarm is None or swarm.state is None or swarm.manager is not None:
        return []
    table = getattr(getattr(swarm, "mesh", None), "table", None)
    if table is None:
        return []
    used: set[str] = set()
    worker = getattr(swarm, "worker", None)
    if worker is not None:
        for c in worker.containers(all=False):
            used.update((c.get("NetworkSettings") or {}).get("Networks") or {})
    created = _local_created(request)
    return [attached_network_json(n.id, n.name, n.vni, n.subnet, n.gateway, n.ingress, created)
            for n in table.networks.values() if n.ingress or n.id in used]


def _regex_match(values: list[str], source: str) -> bool:
    """dockerd's ``filters.Args.Match``: exact, else any value as a regular expression (search)."""
    for v in values:
        if v == source:
            return True
        try:
            if re.search(v, source):
                return True
        except re.error:
            continue
    return False


def _filter(networks: list[JSON], filters: dict[str, list[str]]) -> list[JSON]:
    check_filters(filters, NETWORK_FILTERS)
    for t in filters.get("type", []):
        if t not in ("custom", "builtin"):
            raise InvalidParameter(f"invalid filter: 'type'='{t}'")
    for d in filters.get("dangling", []):
        if d.lower() not in ("true", "false", "1", "0"):
            raise InvalidParameter(f'invalid filter \'dangling=[{d}]\'')
    labels = kv_filter(filters.get("label", []))
    out = []
    for n in networks:
        builtin = n["Scope"] == "local" or n["Ingress"]
        if "name" in filters and not _regex_match(filters["name"], n["Name"]):
            continue
        if "id" in filters and not _regex_match(filters["id"], n["Id"]):
            continue
        if "driver" in filters and n["Driver"] not in filters["driver"]:
            continue
        if "scope" in filters and n["Scope"] not in filters["scope"] and not (
            n["Scope"] == "swarm" and "global" in filters["scope"]):
            continue
        if "type" in filters and ("builtin" if builtin else "custom") not in filters["type"]:
            continue
        if "dangling" in filters:
            dangling = filters["dangling"][0].lower() in ("true", "1")
            if builtin or not dangling:
                continue  # no containers run outside tasks here: custom networks are all "dangling"
        if labels and not labels_match(n.get("Labels") or {}, labels):
            continue
        out.append(n)
    return out


def _find(networks: list[JSON], ref: str) -> JSON:
    """dockerd's lookup order: full id, then full name, then unique id prefix."""
    for n in networks:
        if n["Id"] == ref:
            return n
    named = [n for n in networks if n["Name"] == ref]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise InvalidParameter(f"network {ref} is ambiguous ({len(named)} matches found based on name)")
    prefixed = [n for n in networks if ref and n["Id"].startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise InvalidParameter(f"network {ref} is ambiguous ({len(prefixed)} matches found based on ID prefix)")
    raise NotFound(f"network {ref} not found")


# ------------------------------------------------------------------------------------------ reads


@routes.get("/networks")
async def list_networks(request: web.Request) -> web.StreamResponse:
    filters = query_filters(request)
    return json_response(_filter([*_local(request), *await _cluster(request), *_attached(request)], filters))


@routes.get("/networks/{id}")
async def inspect_network(request: web.Request) -> web.StreamResponse:
    scope = request.query.get("scope", "")
    networks = [*_local(request), *await _cluster(request), *_attached(request)]
    if scope:
        networks = [n for n in networks if n["Scope"] == scope or (scope == "global" and n["Scope"] == "swarm")]
    return json_response(_find(networks, request.match_info["id"]))


# ------------------------------------------------------------------------------------------ create


def _ipam(data: JSON) -> list[IPAMConfig]:
    ipam = optional_field(data, "IPAM", dict, {})
    driver = optional_field(ipam, "Driver", str, "", "IPAM")
    if driver not in ("", "default"):
        raise NotFound(f'plugin "{driver}" not found')
    configs = optional_field(ipam, "Config", list, [], "IPAM")
    out = []
    for i, raw in enumerate(configs):
        where = f"IPAM.Config[{i}]"
        c = expect_type(raw, dict, where)
        cfg = IPAMConfig(
            subnet=optional_field(c, "Subnet", str, "", where),
            gateway=optional_field(c, "Gateway", str, "", where),
            ip_range=optional_field(c, "IPRange", str, "", where),
        )
        _validate_ipam(cfg)
        out.append(cfg)
    return out


def _validate_ipam(cfg: IPAMConfig) -> None:
    """SwarmKit's ``validateIPAMConfiguration`` texts."""
    try:
        subnet = ipaddress.ip_network(cfg.subnet, strict=False)
        if "/" not in cfg.subnet:
            raise ValueError
    except ValueError:
        raise InvalidParameter(invalid_argument(f"ipam configuration: invalid subnet {cfg.subnet}")) from None
    if cfg.ip_range:
        try:
            rng = ipaddress.ip_network(cfg.ip_range, strict=False)
        except ValueError:
            raise InvalidParameter(invalid_argument(f"ipam configuration: invalid range {cfg.ip_range}")) from None
        if rng.network_address not in subnet:
            raise InvalidParameter(invalid_argument(
                f"ipam configuration: subnet {cfg.subnet} does not contain range {cfg.ip_range}"))
    if cfg.gateway:
        try:
            gw = ipaddress.ip_address(cfg.gateway)
        except ValueError:
            raise InvalidParameter(invalid_argument(f"ipam configuration: invalid gateway {cfg.gateway}")) from None
        if gw not in subnet:
            raise InvalidParameter(invalid_argument(
                f"ipam configuration: subnet {cfg.subnet} does not contain gateway {cfg.gateway}"))


def _str_map(data: JSON, key: str) -> dict[str, str]:
    raw = optional_field(data, key, dict, {})
    return {str(k): expect_type(v, str, f"{key}.{k}") for k, v in raw.items()}


def parse_network_create(data: JSON) -> NetworkSpec:
    """A NetworkCreateRequest for an overlay network (type errors and bad IPAM are 400s)."""
    spec = NetworkSpec(
        name=optional_field(data, "Name", str, ""),
        labels=_str_map(data, "Labels"),
        driver="overlay",
        driver_opts=_str_map(data, "Options"),
        ingress=optional_field(data, "Ingress", bool, False),
        attachable=optional_field(data, "Attachable", bool, False),
        internal=optional_field(data, "Internal", bool, False),
        ipam=_ipam(data),
    )
    for key in ("CheckDuplicate", "EnableIPv6", "ConfigOnly"):
        optional_field(data, key, bool, False)
    if optional_field(data, "EnableIPv6", bool, False):
        raise InvalidParameter("IPv6 overlay networks are not supported by this engine")
    if spec.ingress and spec.attachable:
        raise InvalidParameter(invalid_argument("ingress network cannot be attachable"))
    if spec.ingress and spec.internal:
        raise InvalidParameter(invalid_argument("ingress network cannot be internal"))
    return spec


@routes.post("/networks/create")
async def create_network(request: web.Request) -> web.StreamResponse:
    data = await read_json_object(request)
    name = optional_field(data, "Name", str, "")
    driver = optional_field(data, "Driver", str, "") or "bridge"
    if name in PREDEFINED_NETWORKS:
        raise ApiError(403, f"{name} is a pre-defined network and cannot be created")
    if driver in SINGLETON_DRIVERS:
        raise ApiError(403, f'only one instance of "{driver}" network is allowed')
    if driver in LOCAL_DRIVERS:
        raise InvalidParameter(
            f'network driver "{driver}" is not supported by this engine: it runs containers as swarm tasks '
            "only, so create an overlay network (docker network create -d overlay NAME)"
        )
    if driver != "overlay":
        raise NotFound(f'plugin "{driver}" not found')
    swarm = swarm_of(request)
    if swarm is None or swarm.state is None:
        raise ApiError(503, NOT_IN_SWARM_MSG)
    if swarm.manager is None:
        raise ApiError(403, WORKER_CREATE_MSG)
    if name == GWBRIDGE[0]:
        raise Conflict(f"network with name {name} already exists")
    return await _create_cluster_network(request)


async def _create(request: web.Request, manager: Manager) -> web.StreamResponse:
    spec = parse_network_create(await read_json_object(request))
    err = validate_network_name(spec.name)
    if err is not None:
        raise InvalidParameter(err)
    if manager.store.by_name(Network, spec.name):
        raise Conflict(f"network with name {spec.name} already exists")
    if spec.ingress:
        existing = [n for n in manager.store.list(Network) if n.spec.ingress]
        if existing:
            raise Conflict(f"rpc error: code = AlreadyExists desc = ingress network ({existing[0].id}) is already present")
    with manager.store.batch() as tx:
        net = tx.create(Network(spec=spec))
    try:
        await commit(manager, tx)
    except Conflict:
        raise Conflict(f"network with name {spec.name} already exists") from None
    return json_response({"Id": net.id, "Warning": ""}, status=201)


_create_cluster_network = cluster_route(_create)


# ------------------------------------------------------------------------------------------ remove


@routes.delete("/networks/{id}")
async def remove_network(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["id"]
    local = _local(request)
    try:
        found = _find(local, ref)
    except NotFound:
        found = None
    if found is not None:
        if found["Name"] == GWBRIDGE[0]:
            raise ApiError(403, f"error while removing network: network {found['Name']} id {found['Id']} has active endpoints")
        raise ApiError(403, f"{found['Name']} is a pre-defined network and cannot be removed")
    swarm = swarm_of(request)
    if swarm is None or swarm.manager is None:
        raise NotFound(f"network {ref} not found")
    return await _remove_cluster_network(request)


def _uses(target: str, net: Network) -> bool:
    return target == net.id or target.lower() == net.spec.name.lower()


async def _remove(request: web.Request, manager: Manager) -> web.StreamResponse:
    ref = request.match_info["id"]
    nets = [n for n in manager.store.list(Network) if not n.pending_delete]
    found = _find([cluster_network_json(n) for n in nets], ref)
    net = manager.store.get(Network, found["Id"])
    assert net is not None
    services = manager.store.list(Service)
    if net.spec.ingress:
        for svc in services:
            if needs_ingress(svc.spec):
                raise InvalidParameter(
                    f"rpc error: code = FailedPrecondition desc = ingress network cannot be removed because "
                    f"service {svc.id} depends on it")
    for svc in services:
        if any(_uses(a.target, net) for a in svc.spec.task_template.networks):
            raise InvalidParameter(
                f"rpc error: code = FailedPrecondition desc = network {net.id} is in use by service {svc.id}")
    for task in [] if net.spec.ingress else manager.store.list(Task):
        if not task.status.state.is_terminal and any(a.network_id == net.id for a in task.networks):
            raise InvalidParameter(
                f"rpc error: code = FailedPrecondition desc = network {net.id} is in use by task {task.id}")
    await delete_object(manager, Network, net.id)
    return web.Response(status=204)


_remove_cluster_network = cluster_route(_remove)
