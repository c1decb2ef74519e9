"""Hostile input for every API route (hypothesis): malformed and wrong-typed requests never give a 5xx
or a traceback, errors are Docker's ``{"message": ...}``, and a rejected write leaves the cluster as it
was.

One in-process one-node swarm (``swarmharness``) with a service, a secret and a network, so paths with
ids reach real objects. Every route of :data:`agents.api.server.AREAS` is exercised: random methods,
path parameters (real ids and prefixes, garbage, long, unicode, ``..``, ``%00``), query strings (known
parameters with wrong types, malformed ``filters``), bodies shaped after the route's schema in the
v1.45 reference with wrong types at random places, not JSON, deeply nested, huge, and missing or wrong
Content-Type. Requests that would legitimately destroy the fixture (a DELETE that resolves to a real
object, ``swarm leave --force``, ``swarm init --force-new-cluster``, a ``--follow`` log stream) are
never sent. Deterministic (``derandomize=True``, no example database).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.api.routing import METHODS, Route
from agents.api.server import default_routers
from agents.state.objects import Cluster, Network, Node, Secret, Service

from .agentserver import Reply, http_request
from .swarmharness import InProcessNode, loopback_subnet

REFERENCE = Path("/work/shared/reference/docker-engine-api-v1.45.yaml")
MUTATING = {"POST", "PUT", "DELETE", "PATCH"}
OUT_OF_SEQUENCE = "rpc error: code = Unknown desc = update out of sequence"
"""dockerd answers a stale ``?version=`` with this 500 (SwarmKit's gRPC Unknown), and test_api_swarm /
test_api_services pin that; it is the one 5xx allowed here, and it must still leave the cluster as is."""

ROUTES: list[Route] = [r for table in default_routers() for r in table]

HOSTILE = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ------------------------------------------------------------------------------------------ fixtures


@dataclass
class Lab:
    node: InProcessNode
    ids: dict[str, str] = field(default_factory=dict)  # kind -> id of the fixture object
    api_errors: list[logging.LogRecord] = field(default_factory=list)

    def names_and_ids(self) -> list[str]:
        async def collect() -> list[str]:
            store = self.node.swarm.manager.store
            out: list[str] = []
            for kind in (Service, Secret, Network, Node):
                for obj in store.list(kind):
                    out.append(obj.id)
                    spec = getattr(obj, "spec", None)
                    ann = getattr(spec, "annotations", None)
                    if ann is not None and getattr(ann, "name", ""):
                        out.append(ann.name)
                    desc = getattr(obj, "description", None)
                    if desc is not None and getattr(desc, "hostname", ""):
                        out.append(desc.hostname)
            return out

        return self.node.run(collect())

    def fingerprint(self) -> Any:
        """Services, secrets, networks and the cluster with their versions; nodes by spec (their
        status changes on its own)."""

        async def take() -> Any:
            store = self.node.swarm.manager.store
            versioned = {
                kind.__name__: sorted((o.id, o.meta.version) for o in store.list(kind))
                for kind in (Service, Secret, Network, Cluster)
            }
            versioned["Node"] = sorted((n.id, repr(n.spec)) for n in store.list(Node))
            return versioned

        return self.node.run(take())


class _Collect(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:  # an unexpected exception in a handler (ApiError 503s are logged without)
            self.sink.append(record)


def _api(node: InProcessNode, method: str, path: str, body: Any) -> Reply:
    r = http_request(node.sock, method, path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert r.status < 300, (method, path, r.status, r.body)
    return r


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="la-hos-"))  # short: unix socket paths are limited
    node = InProcessNode(root / "m1", "manager1", loopback_subnet() + ".1")
    # Handler exceptions (answered 500) and HTTP-level failures (aiohttp's own plain-text answers).
    loggers = [logging.getLogger("labagent.api"), logging.getLogger("aiohttp.server")]
    lab = Lab(node)
    handler = _Collect(lab.api_errors)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        node.init()
        lab.ids["network"] = _api(node, "POST", "/networks/create",
                                  {"Name": "hostile-net", "Driver": "overlay"}).json()["Id"]
        lab.ids["secret"] = _api(node, "POST", "/secrets/create",
                                 {"Name": "hostile-secret", "Data": "c2VjcmV0"}).json()["ID"]
        lab.ids["service"] = _api(node, "POST", "/services/create", {
            "Name": "hostile-svc",
            "TaskTemplate": {"ContainerSpec": {"Image": "alpine", "Command": ["sleep", "1000"]}},
            "Mode": {"Replicated": {"Replicas": 1}},
        }).json()["ID"]
        lab.ids["node"] = node.run(_first_node(node))
        yield lab
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _first_node(node: InProcessNode) -> str:
    return str(node.swarm.manager.store.list(Node)[0].id)


# ------------------------------------------------------------------------------ reference schemas


@lru_cache(maxsize=1)
def _reference() -> dict[str, Any]:
    if not REFERENCE.exists():
        return {"paths": {}, "definitions": {}}
    import yaml

    return dict(yaml.safe_load(REFERENCE.read_text()))


def _spec_path(path: str) -> str:
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def _operation(route: Route) -> dict[str, Any]:
    return dict(_reference()["paths"].get(_spec_path(route.path), {}).get(route.method.lower(), {}))


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = _reference()["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    if "allOf" in schema:
        merged: dict[str, Any] = {"type": "object", "properties": {}}
        for part in schema["allOf"]:
            part = _resolve(part)
            merged["properties"].update(part.get("properties", {}))
        return merged
    return schema


# ------------------------------------------------------------------------------------- strategies

WEIRD_STRINGS = ["", " ", "..", "../..", "%00", "\x00", "\u202e", "☃", "a" * 5000, "-1", "1e309",
                 "null", "{}", "[]", "true", "0x10", "9" * 40, "\\", "'", '"', "<script>", "*", "?", "#"]

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.sampled_from(WEIRD_STRINGS),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def _shaped(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values mostly shaped like ``schema`` (right keys, often right types) with wrong types mixed in."""
    schema = _resolve(schema)
    wrong = json_scalars if depth > 2 else json_values
    if depth > 4:
        return wrong
    kind = schema.get("type") or ("object" if "properties" in schema else None)
    right: st.SearchStrategy[Any]
    if kind == "object":
        props = schema.get("properties") or {}
        if props:
            right = st.fixed_dictionaries({}, optional={k: _shaped(v, depth + 1) for k, v in props.items()})
        else:
            extra = schema.get("additionalProperties")
            values = _shaped(extra, depth + 1) if isinstance(extra, dict) else json_values
            right = st.dictionaries(st.text(max_size=8), values, max_size=3)
    elif kind == "array":
        right = st.lists(_shaped(schema.get("items") or {}, depth + 1), max_size=3)
    elif kind == "string":
        right = st.sampled_from(schema["enum"]) if schema.get("enum") else (st.text(max_size=20)
                                                                            | st.sampled_from(WEIRD_STRINGS))
    elif kind == "integer":
        right = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, -1, 1, 2**63, 2**64])
    elif kind == "number":
        right = st.floats(allow_nan=False, allow_infinity=False)
    elif kind == "boolean":
        right = st.booleans()
    else:
        return wrong
    return st.one_of(right, right, wrong)


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


RAW_BODIES = st.sampled_from([
    b"", b"   ", b"{", b"}", b"not json", b"\xff\xfe\x00", b"NaN", b"Infinity", b"[1,2", b'{"a":}',
    b'"\\ud800"', b"1" * 5000, b"{}" * 3, b"\x00", _deep(100_000), b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    json.dumps({"Name": "x" * 1_000_000}).encode(), b"null", b"[]", b"true", b"0", b'""',
])

CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json", "application/json; charset=utf-8", None, "", "text/plain",
    "application/x-www-form-urlencoded", "json", "/", "application/json;;=", "application/JSON",
])

QUERY_KEYS = ["force", "version", "filters", "name", "fromImage", "tag", "follow", "stdout", "stderr",
              "timestamps", "tail", "since", "until", "details", "all", "insertDefaults", "status",
              "rotateWorkerToken", "rotateManagerToken", "rotateManagerUnlockKey", "registryAuthFrom",
              "rollback", "limit", "size", "digests", "platform"]

FILTERS = st.one_of(
    st.sampled_from(["{", "[]", "null", "1", '"x"', '{"name":1}', '{"name":[1]}', '{"name":{"x":1}}',
                     '{"id":["a"],"label":{"k=v":true}}', '{"unknown":["x"]}', '{"desired-state":["bogus"]}',
                     '{"node":{"":true}}', '{"name":[' + '"a",' * 2000 + '"a"]}', "[" * 10_000,
                     '{"membership":["bogus"]}', '{"role":["bogus"]}', '{"label":["=","=="]}',
                     '{"mode":["x"]}', '{"scope":["x"]}', '{"type":["x"]}', '{"dangling":["x"]}',
                     '{"driver":[""]}', '{"service":[""]}', '{"names":[""]}']),
    json_values.map(json.dumps),
    st.text(max_size=30),
)


def _query_value(key: str, version: int | None) -> st.SearchStrategy[str]:
    base = st.one_of(
        st.sampled_from(["", "1", "0", "true", "false", "yes", "-1", "1.5", "abc", "9" * 30,
                         str(2**63), str(-(2**63) - 1), "0x1f", " 1", "1 ", "+1", "\u0661", "previous", "spec"]),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.text(max_size=20),
    )
    if key == "filters":
        return FILTERS
    if key == "version" and version is not None:
        return st.one_of(st.just(str(version)), base)
    return base


@dataclass
class Req:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    ids: dict[str, str]  # decoded path parameters
    query: dict[str, str]
    body_value: Any = None

    def __repr__(self) -> str:
        body = self.body if self.body is None or len(self.body) < 300 else self.body[:300] + b"..."
        return f"Req({self.method} {self.path[:300]!r} body={body!r} headers={self.headers})"


def _param_values(lab: Lab, name: str) -> st.SearchStrategy[str]:
    real = list(lab.ids.values())
    return st.one_of(
        st.sampled_from(real),
        st.sampled_from(real).flatmap(lambda i: st.integers(1, len(i)).map(lambda n: i[:n])),
        st.sampled_from(["hostile-svc", "hostile-secret", "hostile-net", "manager1", "ingress", "bridge",
                         "alpine", "alpine:latest", "busybox@sha256:" + "0" * 64, "sha256:", "UPPER/Case"]),
        st.sampled_from(WEIRD_STRINGS),
        st.text(min_size=1, max_size=40),
        st.text(alphabet="abcdef0123456789", min_size=1, max_size=64),
        st.sampled_from(["a" * 10_000, "x/../../y", "%2e%2e", "%00", "%ff", "é" * 300]),
    )


def _quote(value: str, raw: bool) -> str:
    if raw and value.isascii() and value.isprintable() and " " not in value and "?" not in value \
            and "#" not in value:
        return value
    return urllib.parse.quote(value, safe="")


@st.composite
def hostile_request(draw: st.DrawFn, lab: Lab, route: Route) -> Req:
    op = _operation(route)
    # Most requests get the envelope right (method, version prefix, Content-Type, ?version=) so the
    # hostile parts reach the handler's own validation; the rest get the envelope wrong too.
    plain = draw(st.integers(0, 3)) > 0
    if plain:
        method = route.method
        prefix = draw(st.sampled_from(["", "/v1.45", "/v1.24"]))
    else:
        method = draw(st.sampled_from([*METHODS, "PATCH", "OPTIONS"]))
        prefix = draw(st.sampled_from(["", "/v1.45", "/v1.12", "/v99.0", "/v1.45.1", "/v.", "/v1..2"]))
    raw = draw(st.booleans())
    ids: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        value = draw(_param_values(lab, m.group(1)))
        ids[m.group(1)] = value
        return _quote(value, raw)

    path = prefix + re.sub(r"\{(\w+)(?::[^}]*)?\}", sub, route.path)

    version: int | None = None
    if "version" in {p.get("name") for p in op.get("parameters", [])}:
        version = lab.node.run(_version_of(lab, route.path, ids.get("id", "")))
    documented = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
    keys = draw(st.lists(st.sampled_from(documented + QUERY_KEYS), max_size=4, unique=True))
    query = {k: draw(_query_value(k, version)) for k in keys}
    if plain and version is not None and draw(st.integers(0, 3)) > 0:
        query["version"] = str(version)
    query_string = urllib.parse.urlencode(query)
    if draw(st.integers(0, 9)) == 0:
        query_string += draw(st.sampled_from(["&&", "&=1", "&force", "&%zz=%", "&filters=%7B", "&a=%00"]))
    if query_string:
        path += "?" + query_string

    body_schema = next((p.get("schema") for p in op.get("parameters", []) if p.get("in") == "body"), None)
    body_value: Any = None
    kind = draw(st.integers(0, 9))
    if kind <= (7 if plain else 5) and body_schema:
        body_value = draw(_shaped(body_schema))
        body: bytes | None = json.dumps(body_value).encode()
    elif kind <= 6:
        body_value = draw(json_values)
        body = json.dumps(body_value).encode()
    elif kind <= 8:
        body = draw(RAW_BODIES)
    else:
        body = None
    headers: dict[str, str] = {}
    ctype = "application/json" if plain and body else draw(CONTENT_TYPES)
    if ctype is not None:
        headers["Content-Type"] = ctype
    if draw(st.integers(0, 4)) == 0:
        headers["X-Registry-Auth"] = draw(st.sampled_from(["", "!!!", "e30=", "bnVsbA==", "W10=", "eyJ", "%%"]))
    return Req(method, path, body, headers, ids, query, body_value)


async def _version_of(lab: Lab, path: str, ref: str) -> int | None:
    store = lab.node.swarm.manager.store
    kind = next((k for p, k in (("/services", Service), ("/secrets", Secret), ("/nodes", Node)) if path.startswith(p)),
                Cluster if path.startswith("/swarm") else None)
    if kind is None:
        return None
    if kind is Cluster:
        return int(store.list(Cluster)[0].meta.version)
    obj = store.get(kind, ref) or store.get(kind, lab.ids.get(kind.__name__.lower(), ""))
    return int(obj.meta.version) if obj is not None else None


def _destructive(lab: Lab, req: Req) -> bool:
    """Requests that would legitimately remove the fixture (never sent: they are not hostile)."""
    base = urllib.parse.urlsplit(req.path).path
    if req.method == "DELETE" and req.ids:
        known = lab.names_and_ids()
        for value in req.ids.values():
            for part in [value, *value.split("/")]:
                part = part.strip()
                if part and any(k.startswith(part) or k == part for k in known):
                    return True
    truthy = {k: v.strip().lower() not in ("", "0", "no", "false", "none") for k, v in req.query.items()}
    if base.endswith("/swarm/leave") and (truthy.get("force") or "force" in req.path.rsplit("?", 1)[-1]):
        return True
    if base.endswith("/swarm/init") and req.body and b"ForceNewCluster" in req.body:
        return True
    if req.method == "POST" and (base.endswith("/wait") or (base.endswith("/attach") and truthy.get("stream"))):
        return True  # long polls by design, should an id prefix match the fixture's task container
        # (test_api_exec_hostile sends these to that container with the upgrade headers the CLI uses)
    return base.endswith("/logs") and ("follow" in req.path.rsplit("?", 1)[-1])


# ------------------------------------------------------------------------------------- the check


def check(lab: Lab, req: Req) -> None:
    if _destructive(lab, req):
        return
    before = lab.fingerprint()
    errors_before = len(lab.api_errors)
    reply = http_request(lab.node.sock, req.method, req.path, req.body, req.headers)
    text = reply.body.decode("utf-8", "replace")
    where = f"{req!r} -> {reply.status} {text[:500]}"
    assert "Traceback" not in text and "Traceback" not in str(reply.headers), where
    new_errors = [r.getMessage() for r in lab.api_errors[errors_before:]]
    assert not new_errors, f"{where}\nlogged: {new_errors}"
    if reply.status >= 400:
        if req.method != "HEAD":
            assert reply.headers.get("Content-Type", "").startswith("application/json"), where
            data = json.loads(reply.body)
            assert isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"], where
            assert reply.status < 500 or reply.status == 503 or (
                reply.status == 500 and data["message"] == OUT_OF_SEQUENCE), where
        else:
            assert reply.status < 500 or reply.status == 503, where
        if req.method in MUTATING:
            assert lab.fingerprint() == before, f"rejected request changed the cluster: {where}"
    else:
        assert reply.status < 500, where


# ------------------------------------------------------------------------------------------ tests


def _route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


@pytest.mark.parametrize("route", ROUTES, ids=[_route_id(r) for r in ROUTES])
@HOSTILE
@given(data=st.data())
def test_hostile_requests(lab: Lab, route: Route, data: st.DataObject) -> None:
    check(lab, data.draw(hostile_request(lab, route)))


def _fixed(method: str, path: str, body: Any = None, raw: bytes | None = None,
           ctype: str | None = "application/json") -> Req:
    encoded = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    return Req(method, path, encoded, {"Content-Type": ctype} if ctype else {}, {}, {}, body)


@settings(max_examples=1, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=st.just(_fixed("GET", "/_ping")))
# Regressions found by test_hostile_requests ("{service}" etc. stand for the fixture's ids).
# A request line over aiohttp's 8 KiB default: plain-text 400 and a logged traceback.
@example(req=_fixed("POST", "/v1.24/secrets/" + "a" * 10_000 + "/update", {}))
@example(req=_fixed("DELETE", "/networks/" + "a" * 10_000, raw=b"null"))
@example(req=_fixed("GET", "/services/" + "a" * 10_000 + "/logs"))
def test_regressions(lab: Lab, req: Req) -> None:
    req.path = req.path.format(**lab.ids)
    check(lab, req)
