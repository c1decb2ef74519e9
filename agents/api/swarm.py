"""The /swarm endpoints: init, join, leave (this node's membership) and inspect, update, unlock key
(cluster state, answered by the leader).

As dockerd's ``api/server/router/swarm`` and ``daemon/cluster/swarm.go``: init answers the new node id
as a JSON string, join and leave answer an empty 200, update needs ``?version=`` and rotates join tokens
on request. The CLI builds its messages ("Swarm initialized: current node (…) is now a manager.",
"This node joined a swarm as a worker.") from these answers plus /info and /nodes/{id}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from agents.api import netaddr
from agents.api.cluster import (
    NOT_IN_SWARM_MSG,
    cluster_route,
    commit,
    manager_api_error,
    swarm_of,
    version_param,
)
from agents.api.convert import swarm_json
from agents.api.errors import ApiError, Conflict, InvalidParameter, Unavailable
from agents.api.httputil import expect_type, json_response, optional_field, query_bool, read_json_object
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.manager.errors import ManagerError
from agents.manager.manager import Manager
from agents.manager.membership import cluster_of, join_tokens_of
from agents.state.objects import SECOND, ClusterSpec, Driver

routes = RouteTable("swarm")

MIN_CERT_EXPIRY = 3600 * SECOND
AUTOLOCK_UNSUPPORTED = (
    "autolock is not supported by this engine: each manager encrypts its Raft data with a key kept on "
    "its own disk"
)


def _swarm(request: web.Request) -> Any:
    swarm = swarm_of(request)
    if swarm is None:
        raise Unavailable(NOT_IN_SWARM_MSG)
    return swarm


def _advertise(request: web.Request, body: Mapping[str, Any]) -> str:
    advertise = optional_field(body, "AdvertiseAddr", str, "")
    listen = optional_field(body, "ListenAddr", str, "")
    optional_field(body, "DataPathAddr", str, "")
    try:
        return netaddr.advertise_ip(advertise, listen, node_context(request).config.addr)
    except netaddr.AddrError as e:
        raise InvalidParameter(str(e)) from None


def _membership_error(e: ManagerError) -> ApiError:
    """Init/join/leave refusals: dockerd answers them all as 503 (``notAvailableError``) except bad input."""
    if e.status == 500 and e.message.startswith("You are attempting to leave"):
        return Unavailable(e.message)
    if e.message.endswith("desc = invalid join token"):
        return InvalidParameter("invalid join token")
    return manager_api_error(e)


# ------------------------------------------------------------------------------------------ spec


def merge_swarm_spec(spec: ClusterSpec, data: Mapping[str, Any]) -> ClusterSpec:
    """``data`` (a SwarmSpec) merged over ``spec`` as moby's ``MergeSwarmSpecToGRPC``: zero values keep
    the current setting; the name must stay "default"."""
    out = spec.copy()
    name = optional_field(data, "Name", str, "")
    if name not in ("", "default"):
        raise InvalidParameter('swarm spec must be named "default"')
    labels = optional_field(data, "Labels", dict)
    if labels is not None:
        out.labels = {str(k): expect_type(v, str, f"Spec.Labels.{k}") for k, v in labels.items()}
    orch = optional_field(data, "Orchestration", dict, {}, "Spec")
    limit = optional_field(orch, "TaskHistoryRetentionLimit", int, None, "Spec.Orchestration")
    if limit is not None:
        out.orchestration.task_history_retention_limit = limit
    raft = optional_field(data, "Raft", dict, {}, "Spec")
    for key, attr in (("SnapshotInterval", "snapshot_interval"),
                      ("LogEntriesForSlowFollowers", "log_entries_for_slow_followers"),
                      ("HeartbeatTick", "heartbeat_tick"), ("ElectionTick", "election_tick")):
        value = optional_field(raft, key, int, 0, "Spec.Raft")
        if value < 0:
            raise InvalidParameter(f"invalid JSON: Spec.Raft.{key} must not be negative")
        if value:
            setattr(out.raft, attr, value)
    keep = optional_field(raft, "KeepOldSnapshots", int, None, "Spec.Raft")
    if keep is not None:
        out.raft.keep_old_snapshots = keep
    dispatcher = optional_field(data, "Dispatcher", dict, {}, "Spec")
    period = optional_field(dispatcher, "HeartbeatPeriod", int, 0, "Spec.Dispatcher")
    if period < 0:
        raise InvalidParameter("rpc error: code = InvalidArgument desc = invalid argument")
    if period:
        out.dispatcher.heartbeat_period = period
    ca_config = optional_field(data, "CAConfig", dict, {}, "Spec")
    expiry = optional_field(ca_config, "NodeCertExpiry", int, 0, "Spec.CAConfig")
    if expiry:
        if expiry < MIN_CERT_EXPIRY:
            raise InvalidParameter("rpc error: code = InvalidArgument desc = minimum certificate expiry time is: 1h0m0s")
        out.ca_config.node_cert_expiry = expiry
    defaults = optional_field(data, "TaskDefaults", dict, {}, "Spec")
    log_driver = optional_field(defaults, "LogDriver", dict, None, "Spec.TaskDefaults")
    if log_driver is not None:
        options = optional_field(log_driver, "Options", dict, {}, "Spec.TaskDefaults.LogDriver")
        out.task_defaults.log_driver = Driver(
            name=optional_field(log_driver, "Name", str, "", "Spec.TaskDefaults.LogDriver"),
            options={str(k): expect_type(v, str, f"Spec.TaskDefaults.LogDriver.Options.{k}") for k, v in options.items()},
        )
    encryption = optional_field(data, "EncryptionConfig", dict, {}, "Spec")
    if optional_field(encryption, "AutoLockManagers", bool, False, "Spec.EncryptionConfig"):
        raise InvalidParameter(AUTOLOCK_UNSUPPORTED)
    return out


def _is_empty_spec(data: Mapping[str, Any]) -> bool:
    return not any(v not in (None, "", {}, []) for v in data.values())


# ------------------------------------------------------------------------------------------ membership


@routes.post("/swarm/init")
async def init(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    swarm = _swarm(request)
    spec_data = optional_field(body, "Spec", dict, {})
    if optional_field(body, "AutoLockManagers", bool, False):
        raise InvalidParameter(AUTOLOCK_UNSUPPORTED)
    force = optional_field(body, "ForceNewCluster", bool, False)
    for key in ("DataPathPort", "SubnetSize"):
        optional_field(body, key, int, 0)
    pool = optional_field(body, "DefaultAddrPool", list, [])
    for i, p in enumerate(pool):
        expect_type(p, str, f"DefaultAddrPool[{i}]")
    availability = optional_field(body, "Availability", str, "")
    if availability not in ("", "active", "pause", "drain"):
        raise InvalidParameter(f'invalid Availability: "{availability}"')
    spec = merge_swarm_spec(ClusterSpec(), spec_data)  # validate before anything changes
    ip = _advertise(request, body)
    if swarm.state is not None and not force:
        raise Unavailable(
            'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.'
        )
    try:
        node_id = await swarm.init(ip, force_new_cluster=force)
    except ManagerError as e:
        raise _membership_error(e) from None
    except OSError as e:
        raise ApiError(500, f"failed to listen on remote API address: listen tcp {ip}:{swarm.control_port}: "
                            f"bind: {(e.strerror or str(e)).lower()}") from None
    if not force and not _is_empty_spec(spec_data):
        await _update_cluster(swarm.manager, lambda c: spec)
    return json_response(node_id)


async def _update_cluster(manager: Manager | None, change: Any) -> None:
    """Apply ``change(cluster) -> ClusterSpec`` to the cluster spec (right after init)."""
    if manager is None:
        return
    with manager.store.batch() as tx:
        cluster = cluster_of(manager.store).copy()
        cluster.spec = change(cluster)
        tx.update(cluster)
    await commit(manager, tx)


@routes.post("/swarm/join")
async def join(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    swarm = _swarm(request)
    remotes = optional_field(body, "RemoteAddrs", list, [])
    if not remotes:
        raise InvalidParameter("at least 1 RemoteAddr is required to join")
    for i, r in enumerate(remotes):
        if not expect_type(r, str, f"RemoteAddrs[{i}]").strip():
            raise InvalidParameter("invalid empty address")
    token = optional_field(body, "JoinToken", str, "")
    availability = optional_field(body, "Availability", str, "")
    if availability not in ("", "active", "pause", "drain"):
        raise InvalidParameter(f'invalid Availability: "{availability}"')
    ip = _advertise(request, body)
    if swarm.state is not None:
        raise Unavailable(
            'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.'
        )
    last: ApiError | None = None
    for remote in remotes:
        remote = remote.strip()
        if ":" not in remote.rsplit("]", 1)[-1]:
            remote += ":2377"
        try:
            await swarm.join(token, remote, ip)
            return web.Response(status=200)
        except ManagerError as e:
            last = _membership_error(e)
            if e.status < 500:
                break  # the cluster answered (bad token…): another manager would say the same
        except OSError as e:
            raise ApiError(500, f"failed to listen on remote API address: listen tcp {ip}: "
                                f"bind: {(e.strerror or str(e)).lower()}") from None
    assert last is not None
    raise last


@routes.post("/swarm/leave")
async def leave(request: web.Request) -> web.StreamResponse:
    swarm = swarm_of(request)
    if swarm is None or swarm.state is None:
        raise Unavailable("This node is not part of a swarm")
    try:
        await swarm.leave(query_bool(request, "force"))
    except ManagerError as e:
        raise _membership_error(e) from None
    return web.Response(status=200)


# ------------------------------------------------------------------------------------------ cluster


@routes.get("/swarm")
@cluster_route
async def inspect(request: web.Request, manager: Manager) -> web.StreamResponse:
    return json_response(swarm_json(cluster_of(manager.store)))


@routes.post("/swarm/update")
@cluster_route
async def update(request: web.Request, manager: Manager) -> web.StreamResponse:
    version = version_param(request, "swarm")
    body = await read_json_object(request)
    rotate_worker = query_bool(request, "rotateWorkerToken")
    rotate_manager = query_bool(request, "rotateManagerToken")
    if query_bool(request, "rotateManagerUnlockKey"):
        raise InvalidParameter(AUTOLOCK_UNSUPPORTED)
    current = cluster_of(manager.store)
    spec = merge_swarm_spec(current.spec, body)
    with manager.store.batch() as tx:
        cluster = current.copy()
        cluster.meta.version = version
        cluster.spec = spec
        if rotate_worker or rotate_manager:
            rotated = join_tokens_of(current).rotate(current.root_ca.ca_cert_pem, worker=rotate_worker,
                                                      manager=rotate_manager)
            cluster.root_ca.join_tokens = dataclasses.replace(
                cluster.root_ca.join_tokens, worker=rotated.worker, manager=rotated.manager)
        tx.update(cluster)
    await commit(manager, tx)
    return web.Response(status=200)


@routes.get("/swarm/unlockkey")
@cluster_route
async def unlock_key(request: web.Request, manager: Manager) -> web.StreamResponse:
    """Autolock is never on here, so there is no key (the CLI then prints "no unlock key is set")."""
    return json_response({"UnlockKey": ""})


@routes.post("/swarm/unlock")
async def unlock(request: web.Request) -> web.StreamResponse:
    await read_json_object(request)
    swarm = swarm_of(request)
    if swarm is None or swarm.state is None:
        raise Unavailable("This node is not part of a swarm")
    raise Conflict("swarm is not locked")
