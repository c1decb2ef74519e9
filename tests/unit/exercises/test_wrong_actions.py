"""Wrong student actions fail the right check, with the lab's failure message and hint, and nothing else.

Smoke lab: scaled to the wrong count, published the wrong port, used the wrong image, scaled the wrong
service. A drain/rolling-update exercise: forgot to drain, updated without a delay.
"""

from __future__ import annotations

from labctl.exercises.grader import grade
from labctl.exercises.results import LabResult
from labctl.exercises.session import Session
from tests.unit.exercises.conftest import FakeTime, exercise
from tests.unit.exercises.fakedocker import NS, FakeTarget, swarm_lab
from tests.unit.exercises.smokestate import shell, smoke, smoke_lab, solved


def graded(target: FakeTarget, ft: FakeTime, ex: object = None) -> LabResult:
    return grade(Session(ex or smoke(), target, clock=ft.clock), target.lab.name, max_wait=1)  # type: ignore[arg-type]


def failed(r: LabResult) -> dict[str, tuple[str, str]]:
    return {c.title: (c.message, c.hint) for c in r.checks if not c.passed}


def test_right_actions_score_everything(fake_time: FakeTime) -> None:
    _, target = solved()
    r = graded(target, fake_time)
    assert r.passed and r.score == r.max_score == 10, failed(r)


def test_scaled_to_one_instead_of_two(fake_time: FakeTime) -> None:
    cluster, target = smoke_lab()
    shell(cluster, "manager1", "docker service create --name web --replicas 1 -p 8080:80 nginx")
    r = graded(target, fake_time)
    assert failed(r) == {"web runs 2/2 replicas": (
        "web does not run two replicas.",
        "`docker service scale web=2`, then `docker service ps web` to see where the tasks run.")}
    assert r.score == 8 and not r.passed
    detail = next(c.detail for c in r.checks if not c.passed)
    assert "wants 1 replicas, expected 2" in detail


def test_published_the_wrong_port(fake_time: FakeTime) -> None:
    cluster, target = smoke_lab()
    shell(cluster, "manager1", "docker service create --name web --replicas 2 -p 80:80 nginx")
    r = graded(target, fake_time)
    assert set(failed(r)) == {"web publishes 8080 to port 80", "nginx answers through the mesh on every node"}
    assert failed(r)["web publishes 8080 to port 80"][1].startswith("Use `-p 8080:80`")


def test_wrong_image(fake_time: FakeTime) -> None:
    cluster, target = smoke_lab()
    shell(cluster, "manager1", "docker service create --name web --replicas 2 -p 8080:80 httpd")
    r = graded(target, fake_time)
    assert set(failed(r)) == {"web uses the nginx image", "nginx answers through the mesh on every node"}


def test_created_the_service_under_another_name(fake_time: FakeTime) -> None:
    cluster, target = smoke_lab()
    shell(cluster, "manager1", "docker service create --name nginx --replicas 2 -p 8080:80 nginx")
    r = graded(target, fake_time)
    assert {c.title for c in r.checks if not c.passed} == {
        "web uses the nginx image", "web publishes 8080 to port 80", "web runs 2/2 replicas"}
    assert all("there is no service web" in c.detail for c in r.checks if not c.passed)


def test_worker_left_the_swarm(fake_time: FakeTime) -> None:
    cluster, target = solved()
    cluster.local_state["worker1"] = "inactive"
    cluster.node("worker1")["Status"]["State"] = "down"
    r = graded(target, fake_time)
    assert {"every node is in an active swarm", "both nodes are ready"} <= set(failed(r))


# ----- an exercise with drain and a rolling update -------------------------------------------------------
MAINT = [
    {"id": "drain", "title": "Drain worker1 for maintenance", "checks": [
        {"title": "worker1 is drained", "kind": "node.availability",
         "params": {"node": "worker1", "availability": "drain"}, "points": 2,
         "failure": "worker1 still accepts tasks.", "hint": "docker node update --availability drain worker1"},
        {"title": "no task of web on worker1", "kind": "tasks.count",
         "params": {"service": "web", "node": "worker1", "count": 0}, "points": 2,
         "failure": "web still runs on worker1.", "hint": "Drain the node; the swarm moves its tasks."},
        {"title": "web still runs 4 replicas", "kind": "service.replicas",
         "params": {"service": "web", "replicas": 4}, "points": 1, "failure": "web lost replicas.",
         "hint": "Scale web, not another service: docker service scale web=4"},
    ]},
    {"id": "update", "title": "Rolling update, two at a time, 10s apart", "checks": [
        {"title": "update delay is 10s", "kind": "service.update_config",
         "params": {"service": "web", "parallelism": 2, "delay": "10s"}, "points": 2,
         "failure": "web updates without the requested pacing.",
         "hint": "docker service update --update-parallelism 2 --update-delay 10s web"},
        {"title": "web runs nginx:1.27", "kind": "service.image", "params": {"service": "web", "image": "nginx:1.27"},
         "points": 1, "failure": "web is not on nginx:1.27.", "hint": "docker service update --image nginx:1.27 web"},
    ]},
]


def maint_lab(drained: bool, update: dict[str, int] | None, scaled: str = "web") -> FakeTarget:
    cluster, target = swarm_lab(managers=1, workers=2)
    cluster.add_service("web", image="nginx:1.27", replicas=4, update=update)
    cluster.add_service("api", replicas=1)
    cluster.run_replicas("api", ["worker2"], 1)
    placement = ["worker2", "manager1"] if drained else ["worker1", "worker2"]
    cluster.run_replicas("web", placement, 4 if scaled == "web" else 3)
    if drained:
        cluster.node("worker1")["Spec"]["Availability"] = "drain"
    return target


def test_maintenance_done_right(fake_time: FakeTime) -> None:
    ex = exercise(MAINT)
    r = graded(maint_lab(True, {"Parallelism": 2, "Delay": 10 * NS}), fake_time, ex)
    assert r.passed, failed(r)


def test_forgot_to_drain(fake_time: FakeTime) -> None:
    ex = exercise(MAINT)
    r = graded(maint_lab(False, {"Parallelism": 2, "Delay": 10 * NS}), fake_time, ex)
    assert failed(r) == {
        "worker1 is drained": ("worker1 still accepts tasks.", "docker node update --availability drain worker1"),
        "no task of web on worker1": ("web still runs on worker1.", "Drain the node; the swarm moves its tasks."),
    }


def test_updated_without_delay(fake_time: FakeTime) -> None:
    ex = exercise(MAINT)
    r = graded(maint_lab(True, {"Parallelism": 2}), fake_time, ex)
    assert failed(r) == {"update delay is 10s": (
        "web updates without the requested pacing.", "docker service update --update-parallelism 2 --update-delay 10s web")}
    assert "delay is 0, expected 10" in next(c.detail for c in r.checks if not c.passed)


def test_scaled_the_wrong_service(fake_time: FakeTime) -> None:
    ex = exercise(MAINT)
    r = graded(maint_lab(True, {"Parallelism": 2, "Delay": 10 * NS}, scaled="api"), fake_time, ex)
    assert failed(r) == {"web still runs 4 replicas": ("web lost replicas.", "Scale web, not another service: docker service scale web=4")}
