"""Every check kind against the fake swarm: passes on the right state, fails with a useful sentence."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from labctl.exercises.checks import get_kind, kinds
from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.registry import CheckError, Outcome
from labctl.exercises.target import HttpResponse
from tests.unit.exercises.fakedocker import NS, FakeCluster, FakeTarget

Lab = tuple[FakeCluster, FakeTarget]


def run(t: FakeTarget, kind: str, memory: dict[str, Any] | None = None, /, step: str = "s", **params: Any) -> Outcome:
    k = get_kind(kind)
    ctx = CheckContext(t, memory)
    ctx.step_id = step
    try:
        return k.fn(ctx, k.params.model_validate(params))
    except CheckError as e:
        return Outcome(False, str(e))


def test_registry_lists_the_kinds() -> None:
    assert {"swarm.state", "node.role", "node.availability", "node.labels", "node.status", "node.leader",
            "node.leader_changed", "nodes.count", "service.exists", "service.mode", "service.replicas",
            "service.image", "service.constraints", "service.ports", "service.update_config", "tasks.count",
            "tasks.per_node", "tasks.replaced", "http.get", "secret.exists", "secret.readable",
            "command.output", "http.loop"} <= set(kinds())
    assert all(k.doc for k in kinds().values())


# ----- swarm and nodes -----------------------------------------------------------------------------------
def test_swarm_state(lab: Lab) -> None:
    cluster, target = lab
    assert run(target, "swarm.state", node="all", state="active").ok
    cluster.local_state["worker2"] = "inactive"
    out = run(target, "swarm.state", node="all", state="active")
    assert not out.ok and "worker2 is inactive" in out.message
    cluster.down.add("worker1")
    out = run(target, "swarm.state", node="workers")
    assert out.observed == {"worker1": "unreachable", "worker2": "inactive"}
    assert run(target, "swarm.state", node="manager1", control_available=True).ok
    assert not run(target, "swarm.state", node="manager1", control_available=False).ok


def test_node_role_availability_status_labels(lab: Lab) -> None:
    cluster, target = lab
    assert run(target, "node.role", node="worker1", role="worker").ok
    assert not run(target, "node.role", node="worker1", role="manager").ok
    cluster.node("worker1")["Spec"]["Availability"] = "drain"
    assert run(target, "node.availability", node="worker1", availability="drain").ok
    out = run(target, "node.availability", node="all", availability="active")
    assert not out.ok and "worker1 availability is drain" in out.message
    cluster.node("worker2")["Status"]["State"] = "down"
    out = run(target, "node.status", node="all", status="ready")
    assert not out.ok and out.observed["worker2"] == "down"
    cluster.node("worker1")["Spec"]["Labels"] = {"zone": "a", "ssd": "true"}
    assert run(target, "node.labels", node="worker1", labels={"zone": "a"}).ok
    assert not run(target, "node.labels", node="worker1", labels={"zone": "b"}).ok
    assert not run(target, "node.labels", node="worker1", absent=["ssd"]).ok


def test_node_not_in_swarm(lab: Lab) -> None:
    cluster, target = lab
    del cluster.nodes[cluster.node("worker2")["ID"]]
    out = run(target, "node.status", node="worker2")
    assert not out.ok and "worker2 is not part of the swarm" in out.message


def test_leader_and_failover_to_another_manager() -> None:
    from tests.unit.exercises.fakedocker import swarm_lab

    cluster, target = swarm_lab(managers=3, workers=0)
    assert run(target, "node.leader", node="manager1").ok
    memory: dict[str, Any] = {"leader@s": "manager1"}
    out = run(target, "node.leader_changed", memory)
    assert not out.ok and "manager1 still leads" in out.message
    cluster.down.add("manager1")  # the old leader's engine is gone: reads go to another manager
    cluster.set_leader("manager2")
    out = run(target, "node.leader_changed", memory)
    assert out.ok and out.observed == {"before": "manager1", "now": "manager2"}
    assert not run(target, "node.leader_changed", {}).ok  # no baseline recorded
    cluster.set_leader(None)
    assert "no leader" in run(target, "node.leader_changed", memory).message


def test_no_manager_answers(lab: Lab) -> None:
    cluster, target = lab
    cluster.down.add("manager1")
    out = run(target, "service.replicas", service="web", replicas=1)
    assert not out.ok and "no manager of the swarm answers" in out.message


def test_nodes_count() -> None:
    from tests.unit.exercises.fakedocker import swarm_lab

    cluster, target = swarm_lab(managers=3, workers=2)
    assert run(target, "nodes.count", role="manager", reachability="reachable", count=3).ok
    cluster.node("manager3")["ManagerStatus"]["Reachability"] = "unreachable"
    out = run(target, "nodes.count", role="manager", reachability="reachable", min=3)
    assert not out.ok and "2 matching nodes, expected at least 3" in out.message
    assert run(target, "nodes.count", status="ready", max=5).ok


# ----- services ------------------------------------------------------------------------------------------
def test_service_exists_and_mode(lab: Lab) -> None:
    cluster, target = lab
    assert not run(target, "service.exists", service="web").ok
    assert run(target, "service.exists", service="web", absent=True).ok
    cluster.add_service("web")
    assert run(target, "service.exists", service="web").ok
    assert run(target, "service.mode", service="web", mode="replicated").ok
    cluster.add_service("agent", mode="global")
    out = run(target, "service.mode", service="agent", mode="replicated")
    assert not out.ok and "agent is global" in out.message


def test_service_replicas(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=2)
    cluster.add_task("web", "worker1", slot=1)
    out = run(target, "service.replicas", service="web", replicas=2)
    assert not out.ok and "1/2" in out.message
    cluster.add_task("web", "worker2", slot=2, state="starting")
    assert not run(target, "service.replicas", service="web", replicas=2).ok
    assert run(target, "service.replicas", service="web", replicas=2, running=False).ok
    cluster.tasks[-1]["Status"]["State"] = "running"
    assert run(target, "service.replicas", service="web", replicas=2).ok
    out = run(target, "service.replicas", service="nope", replicas=2)
    assert not out.ok and "there is no service nope" in out.message


@pytest.mark.parametrize(("actual", "expected", "ok"), [
    ("nginx:latest", "nginx", True), ("nginx:1.25", "nginx:1.25", True), ("nginx:1.25", "nginx", False),
    ("nginx", "nginx:latest", True), ("docker.io/library/nginx:1.27", "nginx:1.27", True),
    ("redis:7", "nginx", False), ("nginx:1.27-alpine", "nginx:1.27*", True),
    ("registry:5000/app:2", "registry:5000/app:2", True), ("registry:5000/app", "registry:5000/app", True),
])
def test_service_image(lab: Lab, actual: str, expected: str, ok: bool) -> None:
    cluster, target = lab
    cluster.add_service("web", image=actual)
    assert run(target, "service.image", service="web", image=expected).ok is ok


def test_service_constraints(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("web", constraints=["node.role == worker", "node.labels.zone==a"])
    assert run(target, "service.constraints", service="web", contains=["node.role==worker"]).ok
    out = run(target, "service.constraints", service="web", contains=["node.role==worker"], exact=True)
    assert not out.ok and "unexpected node.labels.zone==a" in out.message
    out = run(target, "service.constraints", service="web", absent=["node.labels.zone == a"])
    assert not out.ok
    assert not run(target, "service.constraints", service="web", contains=["node.role==manager"]).ok


def test_service_ports(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("web", ports=[(8080, 80)])
    assert run(target, "service.ports", service="web", published=8080, target=80).ok
    assert run(target, "service.ports", service="web", published=8080, mode="ingress").ok
    out = run(target, "service.ports", service="web", published=80)
    assert not out.ok and "publishes: 8080:80/tcp (ingress)" in out.message
    assert not run(target, "service.ports", service="web", published=8080, protocol="udp").ok


def test_service_update_config(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("web", update={"Parallelism": 2, "Delay": 10 * NS, "FailureAction": "rollback",
                                       "Order": "start-first"})
    assert run(target, "service.update_config", service="web", parallelism=2, delay="10s",
               failure_action="rollback", order="start-first").ok
    out = run(target, "service.update_config", service="web", delay="5s", parallelism=1)
    assert not out.ok and "parallelism is 2, expected 1" in out.message and "delay is 10, expected 5" in out.message
    cluster.add_service("plain")
    out = run(target, "service.update_config", service="plain", delay="10s")
    assert not out.ok and "delay is 0" in out.message  # Docker's default: no delay


# ----- tasks ---------------------------------------------------------------------------------------------
def test_tasks_count_and_per_node(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=4)
    cluster.run_replicas("web", ["worker1", "worker2"], 4)
    assert run(target, "tasks.count", service="web", count=4).ok
    assert run(target, "tasks.count", service="web", node="worker1", count=2).ok
    out = run(target, "tasks.count", service="web", node="worker1", count=0)
    assert not out.ok and "2 running tasks of web on worker1, expected 0" in out.message
    assert run(target, "tasks.per_node", service="web", nodes="workers", count=2).ok
    out = run(target, "tasks.per_node", service="web", nodes="all", min=1)
    assert not out.ok and "on manager1" in out.message
    cluster.tasks[0]["DesiredState"] = "shutdown"  # on its way out: not counted as running
    assert run(target, "tasks.count", service="web", count=3).ok


def test_tasks_replaced(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=2)
    cluster.run_replicas("web", ["worker1", "worker2"], 2)
    out = run(target, "tasks.replaced", service="web")
    assert not out.ok and "0 replaced" in out.message
    cluster.add_task("web", "worker1", slot=1, state="failed", desired="shutdown", err="task: non-zero exit (137)")
    assert run(target, "tasks.replaced", service="web").ok
    assert run(target, "tasks.replaced", service="web", reason="non-zero exit", node="worker1").ok
    assert not run(target, "tasks.replaced", service="web", reason="oom").ok
    assert not run(target, "tasks.replaced", service="web", node="worker2").ok
    assert not run(target, "tasks.replaced", service="web", min=2).ok


# ----- HTTP ----------------------------------------------------------------------------------------------
def test_http_on_every_node(lab: Lab) -> None:
    _, target = lab
    seen: list[str] = []

    def http(url: str) -> HttpResponse:
        seen.append(url)
        if "10.9.0.13" in url:
            raise ConnectionRefusedError("connection refused")
        return HttpResponse(200, {"server": "nginx/1.27.0"}, "<h1>Welcome to nginx!</h1>")

    target.http = http
    out = run(target, "http.get", port=8080, headers={"Server": "nginx*"}, body_contains="Welcome")
    assert seen == ["http://10.9.0.11:8080/", "http://10.9.0.12:8080/", "http://10.9.0.13:8080/"]
    assert not out.ok and "worker2: connection refused" in out.message
    assert run(target, "http.get", port=8080, nodes="manager1", headers={"Server": "nginx*"}).ok
    assert not run(target, "http.get", port=8080, nodes="manager1", headers={"Server": "apache*"}).ok
    assert not run(target, "http.get", port=8080, nodes="manager1", status=404).ok
    assert not run(target, "http.get", port=8080, nodes="manager1", body_contains="Apache").ok
    assert not run(target, "http.get", port=8080, nodes="manager1", headers={"X-Missing": "*"}).ok


# ----- secrets and commands ------------------------------------------------------------------------------
def test_secrets(lab: Lab) -> None:
    cluster, target = lab
    assert not run(target, "secret.exists", secret="db_pw").ok
    cluster.secrets.append({"ID": "x1", "Spec": {"Name": "db_pw"}})
    assert run(target, "secret.exists", secret="db_pw").ok
    assert not run(target, "secret.exists", secret="db_pw", absent=True).ok
    cluster.add_service("db")
    out = run(target, "secret.readable", service="db", secret="db_pw")
    assert not out.ok and "no running task of db" in out.message
    cluster.add_task("db", "worker2", slot=1, files={"/run/secrets/db_pw": "s3cret\n"})
    out = run(target, "secret.readable", service="db", secret="db_pw", contains="s3cret")
    assert out.ok and out.observed == {"node": "worker2", "bytes": 7}
    out = run(target, "secret.readable", service="db", secret="db_pw", contains="other")
    assert not out.ok and "s3cret" not in out.message + str(out.observed)
    digest = hashlib.sha256(b"s3cret\n").hexdigest()
    assert run(target, "secret.readable", service="db", secret="db_pw", sha256=digest).ok
    assert not run(target, "secret.readable", service="db", secret="other").ok
    cluster.down.add("worker2")
    out = run(target, "secret.readable", service="db", secret="db_pw")
    assert not out.ok and "cannot exec in db's container on worker2" in out.message


def test_command_output(lab: Lab) -> None:
    cluster, target = lab
    cluster.add_service("app")
    cluster.add_task("app", "worker1", slot=1, shell=lambda cmd: (0, "hello from app\n") if cmd == "hostname" else (1, "no"))
    assert run(target, "command.output", service="app", command="hostname", contains="hello").ok
    assert run(target, "command.output", service="app", command="hostname", regex=r"^hello from \w+$").ok
    assert run(target, "command.output", service="app", command="hostname", equals="hello from app").ok
    out = run(target, "command.output", service="app", command="false")
    assert not out.ok and "exited 1" in out.message
    assert run(target, "command.output", service="app", command="false", exit_code=1).ok
    target.shell = lambda node, cmd: (0, f"{node}: 3 nodes") if cmd == "docker node ls | wc -l" else (2, "")
    assert run(target, "command.output", node="manager1", command="docker node ls | wc -l", contains="3 nodes").ok
    out = run(target, "command.output", node="manager1", command="docker node ls | wc -l", regex="4 nodes")
    assert not out.ok and "does not match" in out.message
