"""Services, tasks, logs and images endpoints driven by the docker SDK against a real one-node swarm
(in-process, see ``swarmharness``); bodies are checked against the v1.45 reference spec."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import EndpointSpec, ServiceMode

from .agentserver import Reply, http_request
from .swarmharness import InProcessNode, loopback_subnet

pytestmark = pytest.mark.timeout(180)

REFERENCE = Path("/work/shared/reference/docker-engine-api-v1.45.yaml")


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def node() -> Iterator[InProcessNode]:
    root = Path(tempfile.mkdtemp(prefix="la-svc-"))  # short: unix socket paths are limited
    n = InProcessNode(root / "m1", "manager1", loopback_subnet() + ".1")
    try:
        n.init()
        yield n
    finally:
        n.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def client(node: InProcessNode) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=node.base_url, version="1.45", timeout=30)
    try:
        yield c
    finally:
        c.close()


def api(node: InProcessNode, method: str, path: str, body: Any = None) -> Reply:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    return http_request(node.sock, method, path, data, headers)


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def retry_out_of_sequence(svc: Any, action: Callable[[], Any], attempts: int = 10) -> None:
    """What a careful client does: re-read the service and retry when someone else wrote first."""
    for _ in range(attempts):
        svc.reload()
        try:
            action()
            return
        except docker.errors.APIError as exc:
            if "update out of sequence" not in str(exc):
                raise
        time.sleep(0.2)
    pytest.fail("update kept running out of sequence")


# ---------------------------------------------------------------------------------- schema checking


def _validator(definition: str) -> Callable[[Any], None]:
    """Validate against a definition of the reference spec (the colleague's helper when present)."""
    try:
        from tests import apischema  # type: ignore[attr-defined]

        return lambda body: apischema.validate(body, definition)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        pass
    jsonschema = pytest.importorskip("jsonschema")
    yaml = pytest.importorskip("yaml")
    if not REFERENCE.exists():
        pytest.skip("the v1.45 reference spec is not available")
    spec = yaml.safe_load(REFERENCE.read_text())
    schema = {"$ref": f"#/definitions/{definition}", "definitions": spec["definitions"]}
    return lambda body: jsonschema.validate(body, schema)


# --------------------------------------------------------------------------------------------- tests


def test_sdk_service_lifecycle(client: docker.DockerClient) -> None:
    svc = client.services.create(
        "nginx",
        name="web",
        mode=ServiceMode("replicated", replicas=2),
        endpoint_spec=EndpointSpec(ports={8080: 80}),
        labels={"tier": "front"},
    )
    assert [s.name for s in client.services.list(filters={"name": "we"})] == ["web"]
    assert client.services.list(filters={"label": "tier=back"}) == []
    got = client.services.get("web")
    assert got.id == svc.id
    spec = got.attrs["Spec"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 2}}
    assert spec["EndpointSpec"]["Ports"][0]["PublishedPort"] == 8080
    assert spec["UpdateConfig"]["FailureAction"] == "pause"

    def running() -> bool:
        return sum(t["Status"]["State"] == "running" for t in got.tasks()) == 2

    wait_for(running, what="2 running tasks")
    got.reload()  # the orchestrator's task writes don't touch the service: same version, re-read anyway
    version = got.version
    got.update(image="nginx:1.25")
    got.reload()
    assert got.attrs["Spec"]["Labels"] == {"tier": "front"}
    assert got.version > version
    assert got.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:1.25"
    assert got.attrs["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx"
    retry_out_of_sequence(got, lambda: got.scale(3))  # the rolling update moves the version meanwhile
    got.reload()
    assert got.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    listed = client.api.services(status=True)
    status = next(s["ServiceStatus"] for s in listed if s["ID"] == svc.id)
    assert status["DesiredTasks"] == 3
    got.remove()
    assert client.services.list(filters={"id": svc.id}) == []


def test_shapes_match_the_reference(node: InProcessNode, client: docker.DockerClient) -> None:
    svc = client.services.create("alpine", ["sleep", "1000"], name="shape")
    try:
        wait_for(lambda: bool(svc.tasks()), what="a task")
        _validator("Service")(api(node, "GET", f"/v1.45/services/{svc.id}?insertDefaults=true").json())
        task = svc.tasks()[0]
        _validator("Task")(task)
        assert task["ServiceID"] == svc.id and task["Slot"] == 1
        assert task["Spec"]["ContainerSpec"]["Command"] == ["sleep", "1000"]
        one = api(node, "GET", f"/tasks/{task['ID']}")
        assert one.status == 200 and one.json()["ID"] == task["ID"]
        _validator("ServiceCreateResponse")(
            {"ID": svc.id, "Warnings": []}
        )
    finally:
        svc.remove()


def test_random_name_and_rollback(node: InProcessNode, client: docker.DockerClient) -> None:
    svc = client.services.create("alpine", ["sleep", "1000"])
    try:
        assert "_" in svc.name and svc.name.split("_")[0].isalpha()
        retry_out_of_sequence(svc, lambda: svc.update(image="alpine:3.19"))

        def rollback() -> None:
            r = api(node, "POST", f"/services/{svc.id}/update?version={svc.version}&rollback=previous", svc.attrs["Spec"])
            if r.status != 200:
                raise docker.errors.APIError(r.json()["message"])

        retry_out_of_sequence(svc, rollback)
        svc.reload()
        assert svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "alpine"
        assert svc.attrs["UpdateStatus"]["State"] == "rollback_started"
        stale = api(node, "POST", f"/services/{svc.id}/update?version=1", svc.attrs["Spec"])
        assert (stale.status, stale.json()["message"]) == (500, "rpc error: code = Unknown desc = update out of sequence")
    finally:
        svc.remove()


def test_port_conflict_and_name_conflict(node: InProcessNode, client: docker.DockerClient) -> None:
    svc = client.services.create("nginx", name="p1", endpoint_spec=EndpointSpec(ports={5000: 80}))
    try:
        body = {"Name": "p2", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
                "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 5000}]}}
        r = api(node, "POST", "/services/create", body)
        assert r.status == 400
        assert r.json()["message"] == (
            "rpc error: code = InvalidArgument desc = port '5000' is already in use by service 'p1' "
            f"({svc.id}) as an ingress port"
        )
        dup = api(node, "POST", "/services/create", {**body, "Name": "p1", "EndpointSpec": {}})
        assert dup.status == 409
    finally:
        svc.remove()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[]", "expected an object"),
        (b"{", "invalid JSON"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}, "Mode": {"Replicated": {"Replicas": -1}}},
         "Mode.Replicated.Replicas"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}, "Mode": {"Sometimes": {}}},
         "unknown service mode"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"},
                                        "RestartPolicy": {"Delay": "5s"}}}, "RestartPolicy.Delay"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"},
                                        "RestartPolicy": {"Condition": "sometimes"}}}, "invalid RestartCondition"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}, "EndpointSpec": {"Mode": "fast"}},
         "invalid resolution mode"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"},
                                        "Placement": {"Constraints": ["node.role=worker"]}}},
         "constraint expected one operator"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
          "UpdateConfig": {"Delay": -1}}, "update-delay cannot be negative"),
        ({"Name": "x"}, "mismatched Runtime"),
        ({"Name": "bad name", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}}, "DNS name"),
        ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "Nginx:"}}}, "not a valid repository/tag"),
    ],
)
def test_malformed_create_is_400(node: InProcessNode, body: Any, fragment: str) -> None:
    r = api(node, "POST", "/v1.45/services/create", body)
    assert r.status == 400, r.body
    assert fragment in r.json()["message"]


def test_errors_with_dockers_words(node: InProcessNode) -> None:
    assert api(node, "GET", "/services/nope").json() == {"message": "service nope not found"}
    assert api(node, "GET", "/services/nope").status == 404
    assert api(node, "DELETE", "/services/nope").status == 404
    assert api(node, "GET", "/tasks/nope").status == 404
    r = api(node, "GET", '/services?filters={"colour":["red"]}')
    assert (r.status, r.json()["message"]) == (400, "invalid filter 'colour'")
    r = api(node, "GET", '/tasks?filters={"service":["nope"]}')
    assert r.status == 404
    r = api(node, "POST", "/services/nope/update?version=x", {})
    assert r.status == 400 and "invalid service version 'x'" in r.json()["message"]


def test_service_logs_multiplexed(node: InProcessNode, client: docker.DockerClient) -> None:
    svc = client.services.create("alpine", ["sh", "-c", "echo hello-from-task; sleep 1000"], name="talker")
    try:
        wait_for(lambda: any(t["Status"]["State"] == "running" for t in svc.tasks()), what="a running task")

        def logged() -> bool:
            raw = api(node, "GET", f"/services/{svc.id}/logs?stdout=1&stderr=1&details=1").body
            return b"hello-from-task" in raw

        wait_for(logged, what="the task's output")
        r = api(node, "GET", f"/services/{svc.id}/logs?stdout=1&details=1&timestamps=1")
        assert r.headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
        assert r.body[0] == 1 and r.body[1:4] == b"\0\0\0"
        size = int.from_bytes(r.body[4:8], "big")
        line = r.body[8 : 8 + size].decode()
        stamp, details, text = line.split(" ", 2)
        assert stamp.endswith("Z") and text == "hello-from-task\n"
        assert f"com.docker.swarm.service.id={svc.id}" in details
        assert api(node, "GET", f"/services/{svc.id}/logs").status == 400  # no stream chosen
    finally:
        svc.remove()


def test_images_answer_from_the_catalog(node: InProcessNode) -> None:
    dist = api(node, "GET", "/v1.45/distribution/nginx:1.25/json")
    assert dist.status == 200
    _validator("DistributionInspect")(dist.json())
    assert dist.json()["Descriptor"]["digest"].startswith("sha256:")
    assert api(node, "GET", "/distribution/nosuchimage/json").status == 404
    img = api(node, "GET", "/images/library/nginx/json")
    assert img.status == 200 and img.json()["RepoTags"] == ["nginx:latest"]
    assert api(node, "GET", "/images/nosuchimage/json").json() == {"message": "No such image: nosuchimage"}
    assert api(node, "GET", "/images/json").status == 200


def test_containers_of_this_node(node: InProcessNode, client: docker.DockerClient) -> None:
    svc = client.services.create("alpine", ["sleep", "1000"], name="boxes")
    try:
        wait_for(lambda: any(t["Status"]["State"] == "running" for t in svc.tasks()), what="a running task")
        ours = [c for c in client.api.containers() if c["Labels"].get("com.docker.swarm.service.name") == "boxes"]
        assert len(ours) == 1
        _validator("ContainerSummary")(ours[0])
        assert ours[0]["Names"][0].startswith("/boxes.1.")
        assert api(node, "DELETE", f"/containers/{ours[0]['Id']}").status == 409
        assert api(node, "DELETE", f"/containers/{ours[0]['Id']}?force=1").status == 204

        def replaced() -> bool:
            states = sorted(t["Status"]["State"] for t in svc.tasks())
            return "failed" in states and "running" in states

        wait_for(replaced, what="the killed task to be replaced")
        failed = next(t for t in svc.tasks() if t["Status"]["State"] == "failed")
        assert failed["Status"]["ContainerStatus"]["ExitCode"] == 137
    finally:
        svc.remove()


def test_not_in_a_swarm_is_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = Path(tempfile.mkdtemp(prefix="la-ns-"))
    loner = InProcessNode(root, "loner", loopback_subnet() + ".9")
    try:
        r = api(loner, "GET", "/services")
        assert r.status == 503 and r.json()["message"].startswith("This node is not a swarm manager. Use")
        assert api(loner, "GET", "/containers/json").json() == []
    finally:
        loner.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_docker_stop_on_a_task_container_lets_the_service_replace_it(
    node: InProcessNode, client: docker.DockerClient
) -> None:
    svc = client.services.create("nginx", name="stoppable")
    try:
        wait_for(lambda: any(t["Status"]["State"] == "running" for t in svc.tasks()), what="a running task")
        ours = [c for c in client.api.containers() if c["Labels"].get("com.docker.swarm.service.name") == "stoppable"]
        assert len(ours) == 1
        assert api(node, "POST", f"/containers/{ours[0]['Id']}/stop?t=2").status == 204

        def replaced() -> bool:
            tasks = svc.tasks()
            return len(tasks) >= 2 and any(t["Status"]["State"] == "running" for t in tasks)

        wait_for(replaced, what="a replacement for the stopped task")
    finally:
        svc.remove()
