"""The tutorial labs (labs/services-mesh.yaml, labs/rolling-updates.yaml) against a fake swarm: a wrong
student action fails the right check, with that check's failure message and hint, and nothing else of
the step. Each test grades one step of the real lab file (same checks, same texts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from labctl.exercises.grader import grade
from labctl.exercises.model import Exercise, parse_exercise
from labctl.exercises.results import LabResult
from labctl.exercises.session import Session
from tests.unit.exercises.conftest import FakeTime
from tests.unit.exercises.fakedocker import NS, FakeCluster, FakeTarget

LABS = Path(__file__).resolve().parents[3] / "labs"


def step_of(lab: str, step: str) -> tuple[Exercise, dict[str, Any]]:
    """The lab reduced to one step (same topology and checks), and that step's raw YAML."""
    data = yaml.safe_load((LABS / f"{lab}.yaml").read_text())
    raw = next(s for s in data["steps"] if s["id"] == step)
    data = {**data, "steps": [raw]}
    data.pop("points", None)
    return parse_exercise(data, lab), raw


def fake_lab(ex: Exercise, managers: tuple[str, ...], leader: str) -> tuple[FakeCluster, FakeTarget]:
    cluster = FakeCluster(ex.lab.name)
    target = FakeTarget(cluster, [(n.name, "manager" if n.name in managers else "worker") for n in ex.lab.nodes])
    for info in target.lab.nodes:
        cluster.add_node(info.name, info.role, leader=info.name == leader, ip=info.ip)
    return cluster, target


def graded(ex: Exercise, target: FakeTarget, ft: FakeTime) -> LabResult:
    return grade(Session(ex, target, clock=ft.clock), target.lab.name, max_wait=1)


def failed(r: LabResult) -> dict[str, tuple[str, str]]:
    return {c.title: (c.message, c.hint) for c in r.checks if not c.passed}


def texts(raw: dict[str, Any], title: str) -> tuple[str, str]:
    c = next(c for c in raw["checks"] if c["title"] == title)
    return c["failure"], c["hint"]


# ----- services-mesh ------------------------------------------------------------------------------------
MESH_MANAGERS = ("manager2", "manager3")  # after the failover and `node rm manager1`


def mesh_after_drain(drained: bool) -> tuple[Exercise, dict[str, Any], FakeTarget]:
    ex, raw = step_of("services-mesh", "drain")
    cluster, target = fake_lab(ex, MESH_MANAGERS, leader="manager2")
    cluster.add_service("app", image="sposigor/app-flask-teste:1", ports=[(5000, 5000)])
    cluster.run_replicas("app", ["worker1"] if drained else ["manager2"], 1)
    if drained:
        cluster.node("manager2")["Spec"]["Availability"] = "drain"
    return ex, raw, target


def test_services_mesh_drain_done_right(fake_time: FakeTime) -> None:
    ex, _, target = mesh_after_drain(drained=True)
    r = graded(ex, target, fake_time)
    assert r.passed, failed(r)


def test_services_mesh_forgot_to_drain(fake_time: FakeTime) -> None:
    ex, raw, target = mesh_after_drain(drained=False)
    r = graded(ex, target, fake_time)
    assert failed(r) == {
        "manager2 is drained": texts(raw, "manager2 is drained"),
        "no task of app on manager2": texts(raw, "no task of app on manager2"),
    }
    assert "docker node update --availability drain manager2" in failed(r)["manager2 is drained"][1]


def test_services_mesh_scaled_the_wrong_service(fake_time: FakeTime) -> None:
    ex, raw = step_of("services-mesh", "scale")
    cluster, target = fake_lab(ex, MESH_MANAGERS, leader="manager2")
    cluster.add_service("app", image="sposigor/app-flask-teste:1", replicas=4, ports=[(5000, 5000)])
    cluster.run_replicas("app", ["worker1", "worker2", "manager3"], 4)
    cluster.add_service("probe", image="sposigor/app-flask-teste:1", replicas=6)  # scaled instead of app
    cluster.run_replicas("probe", ["worker1", "worker2", "manager3"], 6)
    r = graded(ex, target, fake_time)
    assert failed(r) == {"app runs 6/6 replicas": texts(raw, "app runs 6/6 replicas")}
    assert failed(r)["app runs 6/6 replicas"][1] == "`docker service scale app=6`"


def test_services_mesh_worker_that_answers_cluster_commands_fails(fake_time: FakeTime) -> None:
    ex, raw = step_of("services-mesh", "cluster")
    _, target = fake_lab(ex, ("manager1",), leader="manager1")
    target.shell = lambda node, cmd: (0, "ID HOSTNAME STATUS")  # as if worker1 were a manager
    r = graded(ex, target, fake_time)
    assert failed(r) == {"a worker refuses to list the nodes": texts(raw, "a worker refuses to list the nodes")}
    assert ("worker1", "docker node ls") in target.commands


# ----- rolling-updates ----------------------------------------------------------------------------------
def rolling(update: dict[str, Any] | None, image: str = "busybox") -> tuple[Exercise, dict[str, Any], FakeTarget]:
    ex, raw = step_of("rolling-updates", "rolling")
    cluster, target = fake_lab(ex, ("manager",), leader="manager")
    cluster.add_service("helloworld", image=image, replicas=5, update=update)
    nodes = ["manager", "worker01", "worker02", "worker03"]
    for slot in range(1, 6):
        cluster.add_task("helloworld", nodes[slot % 4], slot=slot, state="shutdown", desired="shutdown")
        cluster.add_task("helloworld", nodes[(slot + 1) % 4], slot=slot)
    return ex, raw, target


def test_rolling_update_done_right(fake_time: FakeTime) -> None:
    ex, _, target = rolling({"Parallelism": 2, "Delay": 10 * NS})
    r = graded(ex, target, fake_time)
    assert r.passed, failed(r)


def test_rolling_update_without_delay(fake_time: FakeTime) -> None:
    ex, raw, target = rolling({"Parallelism": 2})
    r = graded(ex, target, fake_time)
    title = "updates go two at a time, 10s apart"
    assert failed(r) == {title: texts(raw, title)}
    assert "--update-delay 10s" in failed(r)[title][1]


def test_rolling_update_forgot_the_image(fake_time: FakeTime) -> None:
    ex, raw, target = rolling({"Parallelism": 2, "Delay": 10 * NS}, image="alpine")
    r = graded(ex, target, fake_time)
    assert failed(r) == {"helloworld runs busybox": texts(raw, "helloworld runs busybox")}


def test_rolling_updates_worker03_tasks_not_replaced(fake_time: FakeTime) -> None:
    ex, raw = step_of("rolling-updates", "worker-down")
    cluster, target = fake_lab(ex, ("manager",), leader="manager")
    cluster.add_service("web", image="drhelius/helloworld-node-microservice", replicas=10, ports=[(8080, 8080)])
    cluster.run_replicas("web", ["manager", "worker01", "worker02"], 10)  # worker03 never ran any
    cluster.node("worker03")["Status"]["State"] = "down"
    r = graded(ex, target, fake_time)
    assert failed(r) == {"worker03's tasks were replaced": texts(raw, "worker03's tasks were replaced")}
