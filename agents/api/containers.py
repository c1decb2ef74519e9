"""Container endpoints of one node: ``docker ps``, ``inspect``, ``rm -f``, ``logs``, ``stop``, ``kill``, ``wait``,
``docker run`` (create, attach, start, resize), ``docker start [-a]`` and ``docker restart``.

A node's "containers" are what its worker runs (``SwarmNode.worker``, ``agents.worker.agent.Worker``):
the swarm tasks assigned here, named ``<service>.<slot>.<task id>`` with Docker's ``com.docker.swarm.*``
labels, plus its standalone containers (``docker run``; `agents.worker.standalone.StandaloneContainers`,
one per node in ``NodeContext.standalone``, created on first use, in or out of a swarm). Both provide
``find(ref)``, ``logs(ref, ...)``, ``kill(ref)`` and ``remove_container(ref, force)``. ``docker rm -f`` on
a task's container kills it: the worker reports the task failed (exit 137) and the swarm replaces it, as
Docker does. Starting and restarting are for standalone containers only (a service starts its tasks);
attach relays through `agents.api.attach`, ``docker exec`` lives in `agents.api.execs`.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import time
from typing import Any

from aiohttp import web

from agents.api import namesgen
from agents.api.convert import go_time
from agents.api.errors import ApiError, Conflict, InvalidParameter, NotFound, NotImplementedYet
from agents.api.httputil import json_response, query_bool, query_filters, query_int, read_json_object
from agents.api.images import _pulled, resolve_image
from agents.api.logstream import LogOptions, node_worker, render, start_stream, worker_entries
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.worker.images import catalog
from agents.worker.views import human_duration

routes = RouteTable("containers")

CONTAINER_FILTERS = ("label", "name", "status", "id")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
NO_WORKER_MSG = "running containers needs this node's worker, which is not available on this node yet"


# --------------------------------------------------------------------------------------- adapters


def _worker(request: web.Request) -> Any:
    return node_worker(node_context(request))


async def standalone_of(request: web.Request, *, create: bool = False) -> Any:
    """The node's `StandaloneContainers` (started: a restarted agent adopts what it left). Without
    ``create``, None when the node never ran one (listing must not set up an executor for nothing)."""
    ctx = node_context(request)
    owner = getattr(ctx, "standalone", None)
    if owner is None:
        import os

        from agents.worker.standalone import StandaloneContainers

        state_dir = str(ctx.config.state_dir)
        if not create and not os.path.isdir(os.path.join(state_dir, "standalone")):
            return None
        owner = StandaloneContainers(state_dir)
        ctx.standalone = owner  # type: ignore[attr-defined]
    await owner.start()
    return owner


def _owners(request: web.Request, standalone: Any) -> list[Any]:
    return [o for o in (standalone, _worker(request)) if o is not None]


async def containers_of(request: web.Request) -> list[Any]:
    """Every container handle of the node (all states), for lookups by name."""
    out: list[Any] = []
    for owner in _owners(request, await standalone_of(request)):
        fn = getattr(owner, "_containers", None)
        out += list(fn()) if callable(fn) else []
    return out


def _task(c: Any) -> Any:
    return getattr(c, "task", None)


def container_name(c: Any) -> str:
    name = getattr(c, "name", "") or ""
    if not name:
        task = _task(c)
        name = str(getattr(getattr(task, "annotations", None), "name", "")) if task is not None else ""
    return str(name or str(getattr(c, "id", ""))[:12])


def _image(c: Any) -> str:
    image = str(getattr(c, "image", "") or "")
    return image.split("@", 1)[0] if "@" in image else image


def container_labels(c: Any) -> dict[str, str]:
    labels: dict[str, str] = dict(getattr(c, "labels", None) or {})
    task = _task(c)
    if task is not None and getattr(task, "service_id", None):
        labels.update(task.spec.container.labels)
        labels.update(
            {
                "com.docker.swarm.node.id": task.node_id,
                "com.docker.swarm.service.id": task.service_id,
                "com.docker.swarm.service.name": task.service_annotations.name,
                "com.docker.swarm.task": "",
                "com.docker.swarm.task.id": task.id,
                "com.docker.swarm.task.name": task.annotations.name,
            }
        )
    return labels


def _state(c: Any) -> str:
    return str(getattr(c, "state", "created") or "created")


def status_text(c: Any, now: float | None = None) -> str:
    now = time.time() if now is None else now
    state = _state(c)
    if state == "running":
        return f"Up {human_duration(now - float(getattr(c, 'started_at', 0) or now))}"
    if state == "exited":
        code = getattr(c, "exit_code", 0) or 0
        return f"Exited ({code}) {human_duration(now - float(getattr(c, 'finished_at', 0) or now))} ago"
    return "Created"


def _command(c: Any) -> str:
    argv = [str(a) for a in (getattr(c, "argv", None) or [])]
    return " ".join(argv)


def _ports(c: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in getattr(c, "port_bindings", None) or []:
        if isinstance(b, dict):
            out.append(
                {
                    "IP": b.get("HostIp") or "0.0.0.0",
                    "PrivatePort": int(b.get("PrivatePort", 0)),
                    "PublicPort": int(b.get("HostPort", 0)),
                    "Type": b.get("Type", "tcp"),
                }
            )
    if not out:
        try:
            spec = catalog.resolve(str(getattr(c, "image", "")))
        except catalog.ImageError:
            return out
        for p in spec.exposed_ports:
            port, _, proto = p.partition("/")
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    return out


def container_summary(c: Any) -> dict[str, Any]:
    """A ContainerSummary (``GET /containers/json``)."""
    image = _image(c)
    try:
        image_id = catalog.image_id(catalog.resolve(image))
    except catalog.ImageError:
        image_id = ""
    task = _task(c)
    networks: dict[str, Any] = {"ingress": {}} if task is not None and getattr(task, "networks", None) else {"bridge": {}}
    return {
        "Id": str(getattr(c, "id", "")),
        "Names": ["/" + container_name(c)],
        "Image": image,
        "ImageID": image_id,
        "Command": _command(c),
        "Created": int(float(getattr(c, "created", 0) or 0)),
        "Ports": _ports(c),
        "Labels": container_labels(c),
        "State": _state(c),
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Networks": networks},
        "Mounts": [],
    }


async def find_owned(request: web.Request, ref: str) -> tuple[Any, Any]:
    """(container, its owner: the standalone set or the swarm worker); 404 "No such container"."""
    for owner in _owners(request, await standalone_of(request)):
        find = getattr(owner, "find", None)
        if callable(find):
            try:
                return find(ref), owner
            except LookupError:
                pass
    raise NotFound(f"No such container: {ref}")


async def find_container(request: web.Request, ref: str) -> Any:
    """By full id, name (``/name`` too), task id or unique id prefix; 404 "No such container"."""
    return (await find_owned(request, ref))[0]


def _matches(summary: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    name = summary["Names"][0].removeprefix("/") if summary.get("Names") else ""
    if "status" in filters and summary.get("State") not in filters["status"]:
        return False
    if "name" in filters and not any(re.search(v, name) for v in filters["name"]):
        return False
    if "id" in filters and not any(str(summary.get("Id", "")).startswith(v) for v in filters["id"]):
        return False
    if "label" in filters:
        labels = summary.get("Labels") or {}
        for item in filters["label"]:
            key, sep, value = item.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return False
    return True


async def _summaries(request: web.Request, show_all: bool) -> list[dict[str, Any]]:
    standalone = await standalone_of(request)
    summaries: list[dict[str, Any]] = []
    if standalone is not None:
        summaries += [container_summary(c) for c in standalone._containers() if show_all or c.running]
    fn = getattr(_worker(request), "containers", None)
    if callable(fn):
        summaries += list(fn(all=show_all))
    out = []
    for summary in summaries:
        item = dict(summary)
        if not item.get("ImageID"):
            try:
                item["ImageID"] = catalog.image_id(catalog.resolve(str(item.get("Image", ""))))
            except catalog.ImageError:
                pass
        out.append(item)
    return out


@routes.get("/containers/json")
async def list_containers(request: web.Request) -> web.StreamResponse:
    filters = query_filters(request)
    for name in filters:
        if name not in CONTAINER_FILTERS:
            raise InvalidParameter(f"invalid filter '{name}'")
    for s in filters.get("status", []):
        if s not in STATUSES:
            raise InvalidParameter(f"invalid filter 'status={s}'")
    show_all = query_bool(request, "all") or "status" in filters
    limit = query_int(request, "limit", -1)
    items = [c for c in await _summaries(request, show_all) if _matches(c, filters)]
    items.sort(key=lambda c: int(c.get("Created", 0)), reverse=True)
    if limit > 0:
        items = items[:limit]
    return json_response(items)


@routes.get("/containers/{id}/json")
async def inspect_container(request: web.Request) -> web.StreamResponse:
    c = await find_container(request, request.match_info["id"])
    argv = [str(a) for a in (getattr(c, "argv", None) or [])]
    state = _state(c)
    task = _task(c)
    env = list(task.spec.container.env) if task is not None else list(getattr(c, "env", None) or [])
    return json_response(
        {
            "Id": str(getattr(c, "id", "")),
            "Created": go_time(float(getattr(c, "created", 0) or 0)),
            "Path": argv[0] if argv else "",
            "Args": argv[1:],
            "State": {
                "Status": state,
                "Running": state == "running",
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "Dead": False,
                "Pid": int(getattr(c, "pid", 0) or 0) if state == "running" else 0,
                "ExitCode": int(getattr(c, "exit_code", 0) or 0),
                "Error": str(getattr(c, "error", "") or ""),
                "StartedAt": go_time(float(getattr(c, "started_at", 0) or 0)),
                "FinishedAt": go_time(float(getattr(c, "finished_at", 0) or 0)),
            },
            "Image": container_summary(c)["ImageID"],
            "Name": "/" + container_name(c),
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "HostConfig": {
                "NetworkMode": "default",
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "AutoRemove": bool(getattr(c, "auto_remove", False)),
                "LogConfig": {"Type": "json-file", "Config": {}},
                "PortBindings": _port_map(getattr(c, "requested_ports", None) or []) or None,
            },
            "Config": {
                "Hostname": str(getattr(c, "hostname", "") or "")[:12] or str(getattr(c, "id", ""))[:12],
                "Env": env,
                "Cmd": argv or None,
                "Image": str(getattr(c, "image", "")),
                "Labels": container_labels(c),
                **_stdio_config(c),
            },
            "NetworkSettings": _network_settings(c),
            "Mounts": [],
        }
    )


@routes.delete("/containers/{id}")
async def remove_container(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["id"]
    c, owner = await find_owned(request, ref)
    remove = getattr(owner, "remove_container", None)
    if not callable(remove):
        raise NotImplementedYet(NO_WORKER_MSG)
    try:
        result = remove(str(getattr(c, "id", ref)), force=query_bool(request, "force"))
        if inspect.isawaitable(result):
            await result
    except LookupError:
        raise NotFound(f"No such container: {ref}") from None
    except RuntimeError as exc:
        raise Conflict(str(exc)) from None
    return web.Response(status=204)


@routes.get("/containers/{id}/logs")
async def container_logs(request: web.Request) -> web.StreamResponse:
    c, owner = await find_owned(request, request.match_info["id"])
    opts = LogOptions.from_request(request)
    task = _task(c)
    key = str(task.id) if task is not None and getattr(task, "id", None) else str(getattr(c, "id", ""))
    resp = await start_stream(request)
    try:
        async for e in worker_entries(owner, key, opts):
            await resp.write(render(e, opts, container_labels(c) if opts.details else None))
    except ConnectionResetError:
        return resp
    await resp.write_eof()
    return resp


# ---------------------------------------------------------------------------- standalone docker run


def _port_map(bindings: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Bindings -> Docker's ``{"80/tcp": [{"HostIp": ..., "HostPort": ...}]}``."""
    out: dict[str, list[dict[str, str]]] = {}
    for b in bindings:
        key = f"{b.get('PrivatePort')}/{b.get('Type') or 'tcp'}"
        out.setdefault(key, []).append({"HostIp": str(b.get("HostIp") or ""), "HostPort": str(b.get("HostPort") or "")})
    return out


def _network_settings(c: Any) -> dict[str, Any]:
    addresses = [str(a) for a in getattr(c, "addresses", None) or []]
    ip, _, prefix = (addresses[0] if addresses else "").partition("/")
    gateway = ""
    if ip:
        import ipaddress

        gateway = str(ipaddress.ip_interface(addresses[0]).network.network_address + 1)
    running = _state(c) == "running"
    ports: dict[str, Any] = {k: None for k in _port_map(getattr(c, "requested_ports", None) or [])}
    ports.update(_port_map(getattr(c, "port_bindings", None) or []))
    network = {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": gateway if running else "",
        "IPAddress": ip if running else "",
        "IPPrefixLen": int(prefix or 0) if running else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "",
        "DriverOpts": None,
    }
    task = _task(c)
    in_swarm = task is not None and bool(getattr(task, "service_id", ""))
    return {
        "Ports": ports,
        "Networks": {} if in_swarm else {"bridge": network},
        "IPAddress": ip if running else "",
        "IPPrefixLen": int(prefix or 0) if running else 0,
        "Gateway": gateway if running else "",
    }


def _stdio_config(c: Any) -> dict[str, bool]:
    """Config.Tty/OpenStdin/StdinOnce/Attach* as created (the CLI's ``docker start -a`` reads them)."""
    config = getattr(c, "config", None)
    config = config if isinstance(config, dict) else {}
    keys = ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce")
    return {k: bool(config.get(k)) for k in keys}


def _standalone_required(owner: Any, c: Any) -> None:
    if not hasattr(owner, "stop_container"):
        raise Conflict(f"container {str(getattr(c, 'id', ''))[:12]} is a swarm task: its service starts it")


@routes.post("/containers/create")
async def create_container(request: web.Request) -> web.StreamResponse:
    config = await read_json_object(request)
    image = config.get("Image")
    if not isinstance(image, str) or not image:
        raise InvalidParameter("config cannot be empty in order to create a container")
    spec = resolve_image(image)
    ctx = node_context(request)
    if spec.ref not in _pulled.get(ctx.engine_id, {}):
        raise NotFound(f"No such image: {spec.ref}")  # the CLI then pulls it and retries
    name = request.query.get("name", "")
    if name and not re.match(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$", name):
        raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    name = name.removeprefix("/")
    owner = await standalone_of(request, create=True)
    taken = {container_name(c) for c in await containers_of(request)}
    if name and name in taken:
        existing = next((c for c in await containers_of(request) if container_name(c) == name), None)
        raise Conflict(
            f'Conflict. The container name "/{name}" is already in use by container '
            f'"{getattr(existing, "id", "")}". You have to remove (or rename) that container to be able to reuse that name.'
        )
    if not name:
        name = namesgen.unique_name(lambda n: n in taken)
    try:
        c = await owner.create(config, name)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    except OSError as exc:
        raise ApiError(500, f"failed to create container: {exc}") from None
    return json_response({"Id": c.id, "Warnings": []}, status=201)


@routes.post("/containers/{id}/start")
async def start_container(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["id"]
    c, owner = await find_owned(request, ref)
    if _state(c) == "running":
        return web.Response(status=304)
    _standalone_required(owner, c)
    await _start_standalone(owner, c)
    return web.Response(status=204)


async def _start_standalone(owner: Any, c: Any) -> None:
    """Start (or run again, when exited) a standalone container; Docker's texts for what goes wrong."""
    from agents.worker.executor.base import StartFailed
    from agents.worker.standalone import PortAllocated

    try:
        await owner.start_container(c.id)
    except LookupError:
        raise NotFound(f"No such container: {c.id}") from None
    except PortAllocated as exc:
        raise ApiError(500, str(exc)) from None
    except StartFailed as exc:
        raise ApiError(500, str(exc)) from None
    except OSError as exc:
        raise ApiError(500, f"failed to start container {c.id[:12]}: {exc}") from None


@routes.post("/containers/{id}/restart")
async def restart_container(request: web.Request) -> web.StreamResponse:
    """``docker restart``: stop (signal, grace, SIGKILL) if running, then start again."""
    c, owner = await find_owned(request, request.match_info["id"])
    timeout, sig = _stop_options(request)
    _standalone_required(owner, c)
    await owner.stop_container(c.id, timeout, sig)
    await _start_standalone(owner, c)
    return web.Response(status=204)


def _stop_options(request: web.Request) -> tuple[int | None, str | None]:
    from agents.worker.executor.base import parse_signal

    timeout = query_int(request, "t", -1) if request.query.get("t", "") != "" else None
    sig = request.query.get("signal") or None
    if sig is not None:
        try:
            parse_signal(sig)
        except ValueError:
            raise InvalidParameter(f"Invalid signal: {sig}") from None
    return timeout, sig


@routes.post("/containers/{id}/stop")
async def stop_container(request: web.Request) -> web.StreamResponse:
    c, owner = await find_owned(request, request.match_info["id"])
    timeout, sig = _stop_options(request)
    if not hasattr(owner, "stop_container"):
        return await _stop_task_container(owner, c, timeout, sig)
    stopped = await owner.stop_container(c.id, timeout, sig)
    return web.Response(status=204 if stopped else 304)


async def _stop_task_container(worker: Any, c: Any, timeout: int | None, sig: str | None) -> web.StreamResponse:
    """`docker stop` of a swarm task's container, as Docker does it: the stop signal, SIGKILL after the
    grace period; the task then ends and its service replaces it."""
    import asyncio
    import signal as _signal

    from agents.worker.executor.base import parse_signal

    if not getattr(c, "running", False):
        return web.Response(status=304)
    grace = float(timeout) if timeout is not None and timeout >= 0 else 10.0
    with contextlib.suppress(ProcessLookupError):
        await worker.kill(c.id, parse_signal(sig, _signal.SIGTERM))
    try:
        async with asyncio.timeout(grace):
            await c.exited.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            await worker.kill(c.id, _signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await c.exited.wait()
    return web.Response(status=204)


@routes.post("/containers/{id}/kill")
async def kill_container(request: web.Request) -> web.StreamResponse:
    from agents.worker.executor.base import parse_signal

    ref = request.match_info["id"]
    c, owner = await find_owned(request, ref)
    try:
        sig = parse_signal(request.query.get("signal") or "SIGKILL")
    except ValueError:
        raise InvalidParameter(f"Invalid signal: {request.query.get('signal')}") from None
    if _state(c) != "running":
        raise Conflict(f"cannot kill container: {ref}: container {getattr(c, 'id', '')} is not running")
    kill = getattr(owner, "kill", None)
    if not callable(kill):
        raise NotImplementedYet(NO_WORKER_MSG)
    try:
        await kill(c.id, sig)
    except ProcessLookupError:
        raise Conflict(f"cannot kill container: {ref}: container {getattr(c, 'id', '')} is not running") from None
    except RuntimeError as exc:
        raise Conflict(str(exc)) from None
    return web.Response(status=204)


@routes.post("/containers/{id}/wait")
async def wait_container(request: web.Request) -> web.StreamResponse:
    """Headers go out at once (the CLI's ``docker run`` waits for them before it starts the container),
    the body when the condition is met: ``not-running``, ``next-exit`` or ``removed`` (standalone
    containers follow Docker exactly, across restarts and ``--rm``)."""
    import json

    c = await find_container(request, request.match_info["id"])
    condition = request.query.get("condition", "not-running")
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidParameter(f"invalid condition: {condition}")
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    wait = getattr(c, "wait", None)
    if callable(wait):
        code = int(await wait(condition))
    else:
        exited = getattr(c, "exited", None)
        if exited is not None and not (condition != "next-exit" and _state(c) == "exited"):
            await exited.wait()
        code = int(getattr(c, "exit_code", 0) or 0)
    body = {"StatusCode": code, "Error": None}
    with contextlib.suppress(ConnectionResetError):
        await resp.write(json.dumps(body).encode() + b"\n")
        await resp.write_eof()
    return resp


# ---------------------------------------------------------------------------------- attach, resize


@routes.post("/containers/{id}/attach")
async def attach_container(request: web.Request) -> web.StreamResponse:
    """``docker attach`` and the attach of ``docker run``/``docker start -a``: the hijacked connection
    (`agents.api.hijack`) carries the container's stdio (`attach.relay`)."""
    from agents.api import attach
    from agents.api.hijack import hijack, stream_content_type
    from agents.api.httputil import api_version

    opts = attach.AttachOptions.from_request(request)
    await request.read()  # a body (none is expected) must not turn into the container's stdin
    c, owner = await find_owned(request, request.match_info["id"])
    tty = bool(getattr(c, "tty", False))
    try:
        resp, stream = await hijack(request, stream_content_type(tty, api_version(request)))
    except ConnectionError:
        return web.Response(status=204)  # the client left before the stream began
    try:
        await attach.relay(owner, c, stream, tty, opts)
    finally:
        stream.close()
    return resp


@routes.post("/containers/{id}/resize")
async def resize_container(request: web.Request) -> web.StreamResponse:
    height = query_int(request, "h", -1)
    width = query_int(request, "w", -1)
    if not (0 <= height <= 0xFFFF and 0 <= width <= 0xFFFF):
        raise InvalidParameter("invalid resize: h and w must be integers between 0 and 65535")
    c, owner = await find_owned(request, request.match_info["id"])
    if not getattr(c, "running", False):
        raise Conflict(f"Container {getattr(c, 'id', '')} is not running")
    resize = getattr(owner, "resize", None)
    if callable(resize) and getattr(c, "tty", False):
        await resize(c, height, width)
    return web.Response(status=200)
