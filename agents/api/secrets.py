"""The /secrets endpoints (SwarmKit's controlapi secret rules, dockerd's JSON and status codes).

Secret data goes in (base64 in the JSON body, as Go's ``[]byte``) and never comes out. Names follow
``agents.state.validate``; a taken name is 409, a secret used by a service cannot be removed, and an
update may change labels only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
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
from agents.api.convert import secret_json
from agents.api.errors import Conflict, InvalidParameter
from agents.api.httputil import expect_type, json_response, optional_field, query_filters, read_json_object
from agents.api.routing import RouteTable
from agents.manager.manager import Manager
from agents.state.errors import NameConflict
from agents.state.objects import Driver, Secret, SecretSpec, Service
from agents.state.validate import invalid_argument, validate_secret_spec

routes = RouteTable("secrets")

SECRET_FILTERS = {"id", "label", "name", "names"}


def _bytes(data: dict[str, Any], key: str) -> bytes | None:
    """A Go ``[]byte`` field: standard base64 in JSON (null/absent -> None)."""
    raw = optional_field(data, key, str)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(f"invalid JSON: {key} must be base64-encoded bytes") from None


def parse_secret_spec(data: dict[str, Any]) -> SecretSpec:
    labels = optional_field(data, "Labels", dict, {})
    driver_data = optional_field(data, "Driver", dict)
    driver = None
    if driver_data is not None:
        options = optional_field(driver_data, "Options", dict, {}, "Driver")
        driver = Driver(
            name=optional_field(driver_data, "Name", str, "", "Driver"),
            options={str(k): expect_type(v, str, f"Driver.Options.{k}") for k, v in options.items()},
        )
    return SecretSpec(
        name=optional_field(data, "Name", str, ""),
        labels={str(k): expect_type(v, str, f"Labels.{k}") for k, v in labels.items()},
        data=_bytes(data, "Data") or b"",
        driver=driver,
    )


@routes.post("/secrets/create")
@cluster_route
async def create_secret(request: web.Request, manager: Manager) -> web.StreamResponse:
    spec = parse_secret_spec(await read_json_object(request))
    if spec.driver is not None:
        raise InvalidParameter(invalid_argument("secret drivers are not supported by this engine"))
    err = validate_secret_spec(spec)
    if err is not None:
        raise InvalidParameter(err)
    exists = f"rpc error: code = AlreadyExists desc = secret {spec.name} already exists"
    try:
        with manager.store.batch() as tx:
            secret = tx.create(Secret(spec=spec))
    except NameConflict:
        raise Conflict(exists) from None
    try:
        await commit(manager, tx)
    except Conflict:
        raise Conflict(exists) from None
    return json_response({"ID": secret.id}, status=201)


@routes.get("/secrets")
@cluster_route
async def list_secrets(request: web.Request, manager: Manager) -> web.StreamResponse:
    filters = query_filters(request)
    check_filters(filters, SECRET_FILTERS)
    names, prefixes, ids = filters.get("names", []), filters.get("name", []), filters.get("id", [])
    labels = kv_filter(filters.get("label", []))

    def match(s: Secret) -> bool:
        if names and s.spec.name not in names:
            return False
        if prefixes and not any(s.spec.name.startswith(p) for p in prefixes):
            return False
        if ids and not any(s.id.startswith(p) for p in ids):
            return False
        return labels_match(s.spec.labels, labels)

    return json_response([secret_json(s) for s in manager.store.list(Secret) if not s.internal and match(s)])


@routes.get("/secrets/{id}")
@cluster_route
async def inspect_secret(request: web.Request, manager: Manager) -> web.StreamResponse:
    return json_response(secret_json(manager.store.find(Secret, request.match_info["id"])))


def services_using(manager: Manager, secret_id: str) -> list[str]:
    return [
        svc.spec.name
        for svc in manager.store.list(Service)
        if any(ref.secret_id == secret_id for ref in svc.spec.task_template.container.secrets)
    ]


@routes.delete("/secrets/{id}")
@cluster_route
async def remove_secret(request: web.Request, manager: Manager) -> web.StreamResponse:
    secret = manager.store.find(Secret, request.match_info["id"])
    users = services_using(manager, secret.id)
    if users:
        noun = "service" if len(users) == 1 else "services"
        raise InvalidParameter(invalid_argument(
            f"secret '{secret.spec.name}' is in use by the following {noun}: {', '.join(users)}"))
    await delete_object(manager, Secret, secret.id)
    return web.Response(status=204)


@routes.post("/secrets/{id}/update")
@cluster_route
async def update_secret(request: web.Request, manager: Manager) -> web.StreamResponse:
    version = version_param(request, "secret")
    body = await read_json_object(request)
    spec = parse_secret_spec(body)
    secret = manager.store.find(Secret, request.match_info["id"])
    data_given = body.get("Data") is not None
    if spec.name != secret.spec.name or (data_given and not hmac.compare_digest(spec.data, secret.spec.data)):
        raise InvalidParameter(invalid_argument("only updates to Labels are allowed"))
    with manager.store.batch() as tx:
        updated = secret.copy()
        updated.meta.version = version
        updated.spec.labels = spec.labels
        tx.update(updated)
    await commit(manager, tx)
    return web.Response(status=200)
