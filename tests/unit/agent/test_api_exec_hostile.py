"""Hostile input for the exec and attach endpoints aimed at a *real* container and *real* exec instances
(test_api_hostile's generic run mostly meets 404s there, as random ids rarely name a container).

Same fixture and checks as test_api_hostile (no 5xx, no traceback, Docker's ``{"message": ...}``, the
cluster unchanged by a rejected write): the fixture service's task container is the target, each example
gets a fresh exec instance (``true``, harmless when a body happens to be valid), and the hijacking
endpoints are sent with the upgrade headers the docker CLI uses, so a valid request answers at the 101
instead of streaming until the container ends.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from . import test_api_hostile as hostile
from .agentserver import http_request
from .test_api_hostile import (
    CONTENT_TYPES,
    HOSTILE,
    RAW_BODIES,
    WEIRD_STRINGS,
    Lab,
    Req,
    _shaped,
    check,
    json_values,
)

lab = hostile.lab
"""The same module-scoped fixture: a one-node swarm with a service whose task container is the target."""

EXEC_CONFIG = {"type": "object", "properties": {
    "AttachStdin": {"type": "boolean"}, "AttachStdout": {"type": "boolean"}, "AttachStderr": {"type": "boolean"},
    "ConsoleSize": {"type": "array", "items": {"type": "integer"}}, "DetachKeys": {"type": "string"},
    "Tty": {"type": "boolean"}, "Env": {"type": "array", "items": {"type": "string"}},
    "Cmd": {"type": "array", "items": {"type": "string"}}, "Privileged": {"type": "boolean"},
    "User": {"type": "string"}, "WorkingDir": {"type": "string"},
}}
EXEC_START = {"type": "object", "properties": {
    "Detach": {"type": "boolean"}, "Tty": {"type": "boolean"},
    "ConsoleSize": {"type": "array", "items": {"type": "integer"}},
}}
ROUTES = [
    ("POST", "/containers/{cid}/exec", EXEC_CONFIG),
    ("POST", "/exec/{eid}/start", EXEC_START),
    ("POST", "/exec/{eid}/resize", None),
    ("GET", "/exec/{eid}/json", None),
    ("POST", "/containers/{cid}/attach", None),
    ("POST", "/containers/{cid}/resize", None),
    ("POST", "/containers/{cid}/restart", None),
]
QUERY_KEYS = ["h", "w", "stream", "logs", "stdin", "stdout", "stderr", "detachKeys", "t", "signal"]
QUERY_VALUES = st.one_of(
    st.sampled_from(["", "1", "0", "true", "-1", "65536", "99999999999999999999", "1.5", "abc", "SIGKILL", "ctrl-p"]),
    st.text(max_size=12),
)


def _task_container(lab: Lab) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = json.loads(http_request(lab.node.sock, "GET", "/containers/json").body)
        if rows:
            return str(rows[0]["Id"])
        time.sleep(0.2)
    raise AssertionError("the fixture's task never ran")


def _fresh_exec(lab: Lab, cid: str) -> str:
    r = http_request(lab.node.sock, "POST", f"/containers/{cid}/exec", json.dumps({"Cmd": ["true"]}).encode(),
                     {"Content-Type": "application/json"})
    assert r.status == 201, r.body
    return str(json.loads(r.body)["Id"])


@st.composite
def exec_request(draw: st.DrawFn, lab: Lab, cid: str, route: tuple[str, str, Any]) -> Req:
    method, template, schema = route
    eid = _fresh_exec(lab, cid) if "{eid}" in template else ""
    if "{eid}" in template and draw(st.integers(0, 5)) == 0:
        eid = draw(st.sampled_from([*WEIRD_STRINGS[:8], eid[:12], eid.upper()]))
    ref = cid if draw(st.integers(0, 3)) else draw(st.sampled_from([cid[:1], cid[:12], "x" * 300]))
    path = template.format(cid=urllib.parse.quote(ref, safe=""), eid=urllib.parse.quote(eid, safe=""))
    path = draw(st.sampled_from(["", "/v1.45", "/v1.24"])) + path
    query = {k: draw(QUERY_VALUES) for k in draw(st.lists(st.sampled_from(QUERY_KEYS), max_size=4, unique=True))}
    if query:
        path += "?" + urllib.parse.urlencode(query)
    kind = draw(st.integers(0, 9))
    body_value: Any = None
    body: bytes | None
    if kind <= 5 and schema is not None:
        body_value = draw(_shaped(schema))
        body = json.dumps(body_value).encode()
    elif kind <= 7:
        body_value = draw(json_values)
        body = json.dumps(body_value).encode()
    elif kind == 8:
        body = draw(RAW_BODIES)
    else:
        body = None
    headers = {"Connection": "Upgrade", "Upgrade": "tcp"}
    ctype = draw(CONTENT_TYPES) if draw(st.integers(0, 3)) == 0 else "application/json"
    if ctype is not None:
        headers["Content-Type"] = ctype
    return Req(method, path, body, headers, {"cid": ref, "eid": eid}, query, body_value)


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@HOSTILE
@given(data=st.data())
def test_hostile_exec_and_attach(lab: Lab, route: tuple[str, str, Any], data: st.DataObject) -> None:
    cid = _task_container(lab)
    check(lab, data.draw(exec_request(lab, cid, route)))
