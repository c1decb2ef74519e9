"""Image endpoints answered from the offline catalog (``agents.worker.images``), never a registry.

``GET /distribution/{name}/json`` matters most: ``docker service create`` asks it to pin the image to
a digest; answering at once for catalog images means the CLI neither waits for a registry nor warns,
while an unknown image gets the 404 that makes the CLI print Docker's "could not be accessed on a
registry" warning (the service is still created; its tasks are rejected with "No such image").
``docker pull``/``docker run`` get a short, Docker-shaped pull of catalog images; a node remembers
what it pulled so ``docker images`` lists it.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from aiohttp import web

from agents.api.errors import ApiError, InvalidParameter, NotFound
from agents.api.httputil import json_response
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.worker.images import catalog

routes = RouteTable("images")

MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

_pulled: dict[str, dict[str, catalog.ImageSpec]] = {}
"""engine id -> image ref -> spec: what each node (one per process, several in tests) has pulled."""


def resolve_image(ref: str) -> catalog.ImageSpec:
    """The catalog image for ``ref``; 404 "No such image: x" / 400 for a malformed reference."""
    try:
        return catalog.resolve(ref)
    except catalog.InvalidReference as exc:
        raise InvalidParameter(str(exc)) from None
    except catalog.ImageError:
        raise NotFound(f"No such image: {ref}") from None


def remember_pulled(request: web.Request, spec: catalog.ImageSpec) -> None:
    """Record that this node now "has" ``spec`` (listed by ``docker images``)."""
    _pulled.setdefault(node_context(request).engine_id, {})[spec.ref] = spec


def local_images(request: web.Request) -> list[catalog.ImageSpec]:
    """Images this node has: pulled ones plus those its containers and tasks run."""
    have = dict(_pulled.get(node_context(request).engine_id, {}))
    worker: Any = node_context(request).worker
    containers = getattr(worker, "containers", None)
    if callable(containers):
        for c in containers():
            try:
                spec = catalog.resolve(str(getattr(c, "image", "")))
            except catalog.ImageError:
                continue
            have.setdefault(spec.ref, spec)
    return list(have.values())


def _digest(spec: catalog.ImageSpec) -> str:
    return catalog.repo_digest(spec).split("@", 1)[1]


def _created_unix(spec: catalog.ImageSpec) -> int:
    try:
        return int(_dt.datetime.fromisoformat(spec.created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def image_summary(spec: catalog.ImageSpec) -> dict[str, Any]:
    """An ImageSummary (``GET /images/json``)."""
    return {
        "Id": catalog.image_id(spec),
        "ParentId": "",
        "RepoTags": [spec.ref],
        "RepoDigests": [catalog.repo_digest(spec)],
        "Created": _created_unix(spec),
        "Size": spec.size,
        "SharedSize": -1,
        "VirtualSize": spec.size,
        "Labels": dict(spec.labels) or {},
        "Containers": -1,
    }


@routes.get("/images/json")
async def list_images(request: web.Request) -> web.StreamResponse:
    specs = sorted(local_images(request), key=lambda s: s.ref)
    return json_response([image_summary(s) for s in specs])


@routes.get("/images/{name:.+}/json")
async def inspect_image(request: web.Request) -> web.StreamResponse:
    spec = resolve_image(request.match_info["name"])
    return json_response(catalog.image_inspect(spec))


@routes.get("/distribution/{name:.+}/json")
async def inspect_distribution(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    try:
        spec = catalog.resolve(name)
    except catalog.InvalidReference as exc:
        raise InvalidParameter(str(exc)) from None
    except catalog.ImageError:
        # dockerd relays the registry's answer; offline, an unknown image simply does not exist.
        raise ApiError(404, f"No such image: {name}") from None
    arch = str(catalog.image_inspect(spec)["Architecture"])
    return json_response(
        {
            "Descriptor": {"mediaType": MANIFEST_LIST, "digest": _digest(spec), "size": 1_000 + len(spec.ref)},
            "Platforms": [{"architecture": arch, "os": "linux"}],
        }
    )


@routes.post("/images/create")
async def pull_image(request: web.Request) -> web.StreamResponse:
    """``docker pull``: a brief progress stream for catalog images, Docker's 404 otherwise."""
    image = request.query.get("fromImage", "")
    tag = request.query.get("tag", "")
    if not image:
        raise InvalidParameter("fromImage is required (importing images is not supported)")
    ref = f"{image}:{tag}" if tag and not tag.startswith("sha256:") else (f"{image}@{tag}" if tag else image)
    try:
        spec = catalog.resolve(ref)
    except catalog.InvalidReference as exc:
        raise InvalidParameter(str(exc)) from None
    except catalog.ImageError:
        raise NotFound(
            f"pull access denied for {image}, repository does not exist or may require 'docker login': "
            "denied: requested access to the resource is denied"
        ) from None
    remember_pulled(request, spec)
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    layer = catalog.image_inspect(spec)["RootFS"]["Layers"][0][7:19]  # type: ignore[index]
    for msg in (
        {"status": f"Pulling from {_repo_path(spec.name)}", "id": spec.tag},
        {"status": "Pull complete", "progressDetail": {}, "id": layer},
        {"status": f"Digest: {_digest(spec)}"},
        {"status": f"Status: Downloaded newer image for {spec.ref}"},
    ):
        await resp.write((json.dumps(msg) + "\r\n").encode())
    await resp.write_eof()
    return resp


def _repo_path(name: str) -> str:
    return name if "/" in name else f"library/{name}"
