"""The Docker Engine API foundation over a real unix socket: system endpoints, version negotiation,
dockerd's error shapes and headers, and the extension points later routers use."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agents.api import versions
from agents.api.errors import ApiError, Conflict
from agents.api.httputil import (
    api_version,
    json_response,
    optional_field,
    query_bool,
    query_filters,
    query_int,
    read_json_object,
    require_field,
)
from agents.api.routing import RouteTable
from agents.api.server import build_app, default_routers, node_context
from agents.context import NodeContext, load_or_create_engine_id

from .agentserver import ServerThread, make_ctx

STANDARD_HEADERS = {
    "Server": "Docker/26.1.0 (linux)",
    "Api-Version": "1.45",
    "Docker-Experimental": "false",
    "Ostype": "linux",
}


def assert_standard_headers(headers: Any) -> None:
    for name, value in STANDARD_HEADERS.items():
        assert headers[name] == value, name


# --- /_ping ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_ping", "/v1.45/_ping", "/v1.24/_ping"])
def test_ping_get(server: ServerThread, path: str) -> None:
    r = server.request("GET", path)
    assert r.status == 200
    assert r.body == b"OK"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["Swarm"] == "inactive"
    assert r.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert r.headers["Pragma"] == "no-cache"
    assert_standard_headers(r.headers)


def test_ping_head(server: ServerThread) -> None:
    r = server.request("HEAD", "/_ping")
    assert r.status == 200
    assert r.body == b""
    assert r.headers["Content-Length"] == "0"
    assert r.headers["Swarm"] == "inactive"
    assert_standard_headers(r.headers)


# --- /version and /info ----------------------------------------------------------------------------


def test_version(server: ServerThread) -> None:
    r = server.request("GET", "/version")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.body.endswith(b"\n")
    v = r.json()
    assert v["Version"] == "26.1.0"
    assert v["ApiVersion"] == "1.45"
    assert v["MinAPIVersion"] == "1.24"
    assert v["Os"] == "linux"
    assert v["KernelVersion"] == os.uname().release
    assert v["Arch"] and v["GoVersion"] and v["GitCommit"] and v["BuildTime"]
    assert v["Platform"] == {"Name": "labctl swarm agent"}
    engine, agent = v["Components"]
    assert engine["Name"] == "Engine" and engine["Version"] == "26.1.0"
    assert engine["Details"]["ApiVersion"] == "1.45" and engine["Details"]["MinAPIVersion"] == "1.24"
    assert agent["Name"] == "labagent" and agent["Version"] == "0.1.0"
    assert "Experimental" not in v  # omitted when false, as dockerd does


def test_version_with_oldest_prefix(server: ServerThread) -> None:
    r = server.request("GET", "/v1.24/version")
    assert r.status == 200
    assert r.json()["ApiVersion"] == "1.45"


@pytest.mark.parametrize("path", ["/info", "/v1.45/info"])
def test_info(server: ServerThread, path: str) -> None:
    r = server.request("GET", path)
    assert r.status == 200
    assert_standard_headers(r.headers)
    info = r.json()
    cfg = server.ctx.config
    assert info["Name"] == "manager1"
    assert info["ID"] == server.ctx.engine_id
    assert info["DockerRootDir"] == str(cfg.state_dir)
    assert info["ServerVersion"] == "26.1.0"
    assert info["OSType"] == "linux"
    assert info["Architecture"] == os.uname().machine
    assert info["KernelVersion"] == os.uname().release
    assert info["NCPU"] == len(os.sched_getaffinity(0))
    assert info["MemTotal"] > 0
    assert info["OperatingSystem"]
    for key in ("Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped", "Images"):
        assert info[key] == 0
    assert info["Swarm"] == {
        "NodeID": "",
        "NodeAddr": "",
        "LocalNodeState": "inactive",
        "ControlAvailable": False,
        "Error": "",
        "RemoteManagers": None,
    }
    assert info["Plugins"]["Network"] and info["Plugins"]["Volume"] == ["local"]
    assert info["Runtimes"] == {"runc": {"path": "runc"}} and info["DefaultRuntime"] == "runc"
    assert info["Warnings"] == []
    assert "ExecutionDriver" not in info


def test_info_at_oldest_version_has_legacy_field(server: ServerThread) -> None:
    info = server.request("GET", "/v1.24/info").json()
    assert info["ExecutionDriver"] == "<not supported>"


# --- version negotiation ---------------------------------------------------------------------------


def test_too_new_version_is_rejected_with_dockers_message(server: ServerThread) -> None:
    r = server.request("GET", "/v1.99/info")
    assert r.status == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"message": "client version 1.99 is too new. Maximum supported API version is 1.45"}
    assert_standard_headers(r.headers)


def test_next_version_is_rejected(server: ServerThread) -> None:
    r = server.request("GET", "/v1.46/version")
    assert r.status == 400
    assert r.json()["message"] == "client version 1.46 is too new. Maximum supported API version is 1.45"


def test_too_old_version_is_rejected_with_dockers_message(server: ServerThread) -> None:
    r = server.request("GET", "/v1.23/info")
    assert r.status == 400
    assert r.json() == {
        "message": "client version 1.23 is too old. Minimum supported API version is 1.24, "
        "please upgrade your client to a newer version"
    }


@pytest.mark.parametrize("prefix", ["1..45", ".45", "1.45.", "1.4.5."])
def test_malformed_version_prefix_is_400(server: ServerThread, prefix: str) -> None:
    r = server.request("GET", f"/v{prefix}/info")
    assert r.status == 400
    assert r.json()["message"].startswith(f'malformed API version "{prefix}"')


def test_version_prefix_that_is_not_a_number_is_an_unknown_route(server: ServerThread) -> None:
    # dockerd's router only treats /v[0-9.]+ as a version; anything else is just a path.
    r = server.request("GET", "/v1.x/info")
    assert r.status == 404
    assert r.json() == {"message": "page not found"}


def test_negotiate_unit() -> None:
    assert versions.negotiate(None) == "1.45"
    assert versions.negotiate("1.24") == "1.24"
    assert versions.negotiate("1.40") == "1.40"
    assert versions.less_than("1.9", "1.24") and versions.compare("1", "1.0") == 0
    with pytest.raises(ApiError) as e:
        versions.negotiate("2")
    assert e.value.status == 400 and "too new" in e.value.message


# --- unknown routes and methods --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1.45/nope", "/v1.99/nope", "/info/", "/"])
def test_unknown_route_is_404_json(server: ServerThread, path: str) -> None:
    r = server.request("GET", path)
    assert r.status == 404
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"message": "page not found"}
    assert_standard_headers(r.headers)


@pytest.mark.parametrize(("method", "path"), [("POST", "/info"), ("DELETE", "/v1.45/version"), ("HEAD", "/info")])
def test_wrong_method_is_404_like_dockerd(server: ServerThread, method: str, path: str) -> None:
    # dockerd's mux sends method mismatches to its not-found handler: 404 "page not found", not 405.
    r = server.request(method, path)
    assert r.status == 404
    if method != "HEAD":
        assert r.json() == {"message": "page not found"}


# --- extension points: a router of a later issue -------------------------------------------------

extra = RouteTable("test")


@extra.get("/boom")
async def _boom(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("kaboom")


@extra.get("/conflict")
async def _conflict(request: web.Request) -> web.StreamResponse:
    raise Conflict("name conflicts with an existing object")


@extra.post("/echo")
async def _echo(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    name = require_field(body, "Name", str)
    labels = optional_field(body, "Labels", dict, {})
    replicas = optional_field(body, "Replicas", int, 1, path="Mode")
    return json_response({"Name": name, "Labels": labels, "Replicas": replicas, "Version": api_version(request)})


@extra.get("/query")
async def _query(request: web.Request) -> web.StreamResponse:
    return json_response(
        {
            "force": query_bool(request, "force"),
            "limit": query_int(request, "limit", 10),
            "filters": query_filters(request),
            "node": node_context(request).config.node_name,
        }
    )


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerThread(make_ctx(tmp_path_factory.mktemp("ext"), "worker1"), [*default_routers(), extra]).start()
    try:
        yield srv
    finally:
        srv.stop()


def _post_json(srv: ServerThread, path: str, payload: Any, content_type: str = "application/json") -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return srv.request("POST", path, body, {"Content-Type": content_type})


def test_extra_router_is_served_versioned_and_unversioned(ext_server: ServerThread) -> None:
    r = _post_json(ext_server, "/v1.41/echo", {"Name": "web", "Replicas": 3})
    assert r.status == 200
    assert r.json() == {"Name": "web", "Labels": {}, "Replicas": 3, "Version": "1.41"}
    r = _post_json(ext_server, "/echo", {"Name": "web"})
    assert r.json()["Version"] == "1.45"
    assert ext_server.request("GET", "/_ping").status == 200  # system routes still there


def test_api_error_becomes_docker_json(ext_server: ServerThread) -> None:
    r = ext_server.request("GET", "/conflict")
    assert r.status == 409
    assert r.json() == {"message": "name conflicts with an existing object"}


def test_unexpected_exception_is_500_without_traceback(
    ext_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="labagent.api"):
        r = ext_server.request("GET", "/boom")
    assert r.status == 500
    message = r.json()["message"]
    assert "kaboom" in message and "Traceback" not in message
    logged = [rec for rec in caplog.records if rec.name == "labagent.api"]
    assert logged and logged[-1].exc_info is not None  # the traceback goes to the log


@pytest.mark.parametrize(
    ("payload", "content_type", "fragment"),
    [
        (b"{not json", "application/json", "invalid JSON"),
        (b'{"Name": "a"} trailing', "application/json", "invalid JSON"),
        (b"[1, 2]", "application/json", "expected an object, got array"),
        (b'{"Name": NaN}', "application/json", "invalid JSON"),
        (b"\xff\xfe", "application/json", "invalid JSON"),
        (b"[" * 100000, "application/json", "invalid JSON"),
        (b"{}", "application/json", "Name is required"),
        (b'{"Name": 5}', "application/json", "Name must be a string, got integer"),
        (b'{"Name": "a", "Replicas": "3"}', "application/json", "Mode.Replicas must be an integer, got string"),
        (b'{"Name": "a", "Replicas": true}', "application/json", "Mode.Replicas must be an integer, got boolean"),
        (b'{"Name": "a", "Labels": []}', "application/json", "Labels must be an object, got array"),
        (b'{"Name": "a"}', "text/plain", "unsupported Content-Type header (text/plain)"),
    ],
)
def test_bad_json_input_is_400(ext_server: ServerThread, payload: bytes, content_type: str, fragment: str) -> None:
    r = _post_json(ext_server, "/echo", payload, content_type)
    assert r.status == 400, r.body
    assert fragment in r.json()["message"]


def test_body_without_content_type_is_rejected_like_dockerd(ext_server: ServerThread) -> None:
    r = ext_server.request("POST", "/echo", b'{"Name": "a"}', {"Content-Type": ""})
    assert r.status == 400
    assert "Content-Type" in r.json()["message"]


def test_query_helpers(ext_server: ServerThread) -> None:
    filters = json.dumps({"name": {"web": True}, "label": ["a=b"]})
    r = ext_server.request("GET", f"/query?force=1&limit=5&filters={_quote(filters)}")
    assert r.json() == {
        "force": True,
        "limit": 5,
        "filters": {"name": ["web"], "label": ["a=b"]},
        "node": "worker1",
    }
    assert ext_server.request("GET", "/query?force=false").json()["force"] is False
    assert ext_server.request("GET", "/query?force=").json()["force"] is False
    r = ext_server.request("GET", "/query?limit=ten")
    assert r.status == 400 and "limit" in r.json()["message"]
    r = ext_server.request("GET", "/query?filters=" + _quote('{"name": 3}'))
    assert r.status == 400 and r.json()["message"] == "invalid filter 'name'"
    r = ext_server.request("GET", "/query?filters=" + _quote("nope"))
    assert r.status == 400 and r.json()["message"] == "invalid filter"


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def test_duplicate_route_across_tables_is_an_error(tmp_path: Path) -> None:
    clash = RouteTable("clash")
    clash.add("GET", "/info", _boom)
    with pytest.raises(ValueError, match="declared by both 'system' and 'clash'"):
        build_app(make_ctx(tmp_path), [*default_routers(), clash])


def test_route_table_rejects_versioned_or_duplicate_paths() -> None:
    t = RouteTable("t")
    with pytest.raises(ValueError):
        t.add("GET", "/v{version}/x", _boom)
    with pytest.raises(ValueError):
        t.add("PATCH", "/x", _boom)
    t.add("GET", "/x", _boom)
    with pytest.raises(ValueError):
        t.add("get", "/x", _boom)


# --- node context: swarm handle and engine id ------------------------------------------------------


class _FakeSwarm:
    def ping_status(self) -> str:
        return "active/manager"

    def info(self) -> dict[str, Any]:
        return {"NodeID": "abc", "NodeAddr": "192.168.56.11", "LocalNodeState": "active", "ControlAvailable": True}


def test_swarm_handle_feeds_ping_and_info(tmp_path: Path) -> None:
    ctx: NodeContext = make_ctx(tmp_path)
    ctx.swarm = _FakeSwarm()
    srv = ServerThread(ctx).start()
    try:
        assert srv.request("HEAD", "/_ping").headers["Swarm"] == "active/manager"
        assert srv.request("GET", "/info").json()["Swarm"]["LocalNodeState"] == "active"
    finally:
        srv.stop()
    assert not ctx.config.socket_path.exists()  # close() removed the socket


def test_engine_id_is_persistent(tmp_path: Path) -> None:
    first = load_or_create_engine_id(tmp_path)
    assert first == load_or_create_engine_id(tmp_path)
    assert (tmp_path / "engine-id").read_text().strip() == first
    other = tmp_path / "other"
    other.mkdir()
    assert load_or_create_engine_id(other) != first
