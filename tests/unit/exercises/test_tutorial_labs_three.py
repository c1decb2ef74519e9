"""The lab for tutorial 002 (labs/three-managers.yaml) against the fake swarm: the solved state passes a
step, and a typical wrong student action fails the right check with that check's own failure message and
hint (read from the lab file), and nothing else of the step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from labctl.exercises.grader import grade
from labctl.exercises.model import Exercise, load_exercise, parse_exercise
from labctl.exercises.polling import Clock
from labctl.exercises.results import LabResult
from labctl.exercises.runner import run_auto
from labctl.exercises.session import Session
from labctl.exercises.target import HttpResponse
from tests.unit.exercises.conftest import FakeTime
from tests.unit.exercises.fakedocker import NS, FakeCluster, FakeTarget
from tests.unit.exercises.test_runner import Saves

LAB = Path(__file__).resolve().parents[3] / "labs" / "three-managers.yaml"
NODES = ("node-001", "node-002", "node-003")


def steps_of(*ids: str) -> tuple[Exercise, dict[str, dict[str, Any]]]:
    """The lab reduced to some steps (same topology, checks and texts), and those steps' raw YAML."""
    data = yaml.safe_load(LAB.read_text())
    raw = {s["id"]: s for s in data["steps"] if s["id"] in ids}
    assert set(raw) == set(ids)
    data = {**data, "steps": [s for s in data["steps"] if s["id"] in ids]}
    data.pop("points")
    return parse_exercise(data, "three-managers"), raw


def texts(raw: dict[str, Any], title: str) -> tuple[str, str]:
    c = next(c for c in raw["checks"] if c["title"] == title)
    return c["failure"], c["hint"]


def swarm(ex: Exercise, leader: str = "node-001", workers: tuple[str, ...] = ()) -> tuple[FakeCluster, FakeTarget]:
    cluster = FakeCluster(ex.lab.name)
    target = FakeTarget(cluster, [(n, "manager") for n in NODES])
    for info in target.lab.nodes:
        role = "worker" if info.name in workers else "manager"
        cluster.add_node(info.name, role, leader=info.name == leader, ip=info.ip)
    return cluster, target


def graded(ex: Exercise, target: FakeTarget, ft: FakeTime, memory: dict[str, Any] | None = None) -> LabResult:
    """Every check read now (`at: step` ones too: the fake holds the state of that moment)."""
    checks = [c.model_copy(update={"at": "end"}) for c in ex.checks]
    for new, old in zip(checks, ex.checks, strict=True):
        new._args = old.args
    steps = []
    for s in ex.steps:
        steps.append(s.model_copy(update={"checks": [c for c in checks if any(c.id == o.id for o in s.checks)]}))
    flat = ex.model_copy(update={"steps": steps})
    return grade(Session(flat, target, memory=dict(memory or {}), clock=ft.clock), target.lab.name, max_wait=1)


def failed(r: LabResult) -> dict[str, tuple[str, str]]:
    return {c.title: (c.message, c.hint) for c in r.checks if not c.passed}


def test_the_lab_validates_and_every_check_explains_itself() -> None:
    ex = load_exercise(LAB)
    assert ex.points == ex.max_score and ex.lab.swarm == "bare"
    assert [n.name for n in ex.lab.nodes] == list(NODES)
    assert all(c.hint and c.failure for c in ex.checks)
    assert all(s.run or s.fault for s in ex.steps), "every step has a solution or a scene"
    assert any(c.kind == "http.loop" and c.at == "step" for c in ex.checks)


# ----- drain the leader ----------------------------------------------------------------------------------
def drained(node: str | None) -> tuple[LabResult, dict[str, Any]]:
    ex, raw = steps_of("drain")
    cluster, target = swarm(ex)
    cluster.add_service("web", image="nginx:1.22", replicas=2, ports=[(80, 80)])
    on = [n for n in NODES if n != node][:2] if node else ["node-001", "node-002"]
    cluster.run_replicas("web", on, 2)
    if node:
        cluster.node(node)["Spec"]["Availability"] = "drain"
    return graded(ex, target, FakeTime()), raw["drain"]


def test_drain_done_right() -> None:
    r, _ = drained("node-001")
    assert r.passed and r.score == r.max_score, failed(r)


def test_forgot_to_drain_the_leader() -> None:
    r, raw = drained(None)
    assert failed(r) == {t: texts(raw, t) for t in ("node-001 is drained", "no web task runs on node-001")}
    assert "docker node update --availability drain node-001" in failed(r)["node-001 is drained"][1]


def test_drained_a_follower_instead() -> None:
    r, _ = drained("node-002")
    assert set(failed(r)) == {"node-001 is drained", "no web task runs on node-001"}
    assert "node-001 availability is active" in next(c.detail for c in r.checks if c.title == "node-001 is drained")


def test_demoted_the_leader_instead_of_draining_it() -> None:
    ex, raw = steps_of("drain")
    cluster, target = swarm(ex, leader="node-002", workers=("node-001",))
    cluster.add_service("web", image="nginx:1.22", replicas=2, ports=[(80, 80)])
    cluster.run_replicas("web", ["node-002", "node-003"], 2)
    r = graded(ex, target, FakeTime())
    assert failed(r) == {t: texts(raw["drain"], t) for t in ("node-001 is drained", "node-001 still leads")}


# ----- labels and constraints ----------------------------------------------------------------------------
def placement(label_on: str) -> tuple[LabResult, dict[str, Any]]:
    ex, raw = steps_of("placement")
    cluster, target = swarm(ex)
    cluster.add_service("web-nginx", image="nginx:1.22", ports=[(8081, 80)], constraints=["node.hostname == node-001"])
    cluster.run_replicas("web-nginx", ["node-001"], 1)
    cluster.add_service("web-httpd", image="httpd:latest", ports=[(8082, 80)], constraints=["node.labels.ROOM == N1"])
    cluster.run_replicas("web-httpd", [label_on], 1)
    cluster.node(label_on)["Spec"]["Labels"] = {"ROOM": "N1"}
    servers = {"8081": "nginx/1.22.1", "8082": "Apache/2.4.58 (Unix)"}
    target.http = lambda url: HttpResponse(200, {"Server": servers[url.rsplit(":", 1)[1].split("/")[0]]}, "ok")
    return graded(ex, target, FakeTime()), raw["placement"]


def test_placement_done_right() -> None:
    r, _ = placement("node-002")
    assert r.passed and r.score == r.max_score, failed(r)


def test_label_on_the_wrong_node() -> None:
    r, raw = placement("node-003")
    assert failed(r) == {t: texts(raw, t) for t in ("node-002 carries the label ROOM=N1", "web-httpd runs on node-002")}
    assert failed(r)["node-002 carries the label ROOM=N1"][1].startswith("`docker node update --label-add ROOM=N1 node-002`")


def test_constraint_with_a_typo() -> None:
    ex, raw = steps_of("placement")
    cluster, target = swarm(ex)
    cluster.add_service("web-nginx", image="nginx:1.22", ports=[(8081, 80)], constraints=["node.hostname == node-001"])
    cluster.run_replicas("web-nginx", ["node-001"], 1)
    cluster.add_service("web-httpd", image="httpd:latest", ports=[(8082, 80)], constraints=["node.labels.room == N1"])
    cluster.node("node-002")["Spec"]["Labels"] = {"ROOM": "N1"}  # the task stays pending: no node has "room"
    target.http = lambda url: HttpResponse(200, {"Server": "nginx/1.22.1" if ":8081" in url else "Apache/2.4"}, "ok")
    r = graded(ex, target, FakeTime())
    title = "web-httpd is constrained to ROOM == N1"
    assert set(failed(r)) == {title, "web-httpd runs on node-002"}
    assert failed(r)[title] == texts(raw["placement"], title)


# ----- the rolling update, with the client loop ----------------------------------------------------------
def slow_clock(ft: FakeTime) -> Clock:
    def sleep(s: float) -> None:
        time.sleep(0.02)  # real time for the client loop's thread (it samples every 0.2 s)
        ft.sleep(s)

    return Clock(ft.now, sleep)


def rolling(update: dict[str, Any], failures: int) -> tuple[LabResult, dict[str, Any]]:
    """The rolling step run by `run_auto`: its `run` (the student's update) completes an update of web;
    the HTTP side refuses `failures` requests first (all tasks replaced at once leave nothing to answer)."""
    ex, raw = steps_of("rolling")
    cluster, target = swarm(ex)
    sid = cluster.add_service("web", image="nginx:1.22", replicas=3, ports=[(80, 80)], update=update)
    for slot, node in enumerate(NODES, start=1):
        cluster.add_task("web", node, slot=slot, state="shutdown", desired="shutdown")
        cluster.add_task("web", node, slot=slot)
    left = {"n": failures}

    def http(url: str) -> HttpResponse:
        if left["n"] > 0:
            left["n"] -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return HttpResponse(200, {"Server": "nginx/1.22.1"}, "Welcome to nginx!")

    def shell(node: str, cmd: str) -> tuple[int, str]:
        cluster.services[sid]["UpdateStatus"] = {"State": "completed", "StartedAt": "2024-05-30T06:50:30Z",
                                                 "CompletedAt": "2024-05-30T06:50:52Z"}
        return 0, "web\n"

    target.http, target.shell = http, shell
    ft = FakeTime()
    return run_auto(Session(ex, target, clock=slow_clock(ft)), target.lab.name, saver=Saves()), raw["rolling"]


def test_rolling_update_done_right() -> None:
    r, _ = rolling({"Parallelism": 1, "Delay": 5 * NS}, failures=0)
    assert r.passed and r.score == r.max_score, failed(r)
    loop = next(c for c in r.checks if c.kind == "http.loop")
    assert loop.observed["requests"] >= 10 and loop.observed["failed"] == 0


def test_updated_without_parallelism_or_delay() -> None:
    r, raw = rolling({"Parallelism": 0}, failures=4)
    titles = ("web updates one task at a time, 5s apart", "no request failed during the update")
    assert failed(r) == {t: texts(raw, t) for t in titles}
    details = {c.title: c.detail for c in r.checks}
    assert "parallelism is 0, expected 1" in details[titles[0]] and "delay is 0, expected 5" in details[titles[0]]
    assert "failed since the step started (at most 0 allowed)" in details[titles[1]]
    assert "Connection reset by peer" in details[titles[1]]


# ----- failover and quorum -------------------------------------------------------------------------------
def test_leadership_went_back_to_the_old_leader(fake_time: FakeTime) -> None:
    ex, raw = steps_of("leader-down", "leader-back")
    _, target = swarm(ex, leader="node-001")
    r = graded(ex, target, fake_time, memory={"leader@leader-down": "node-001", "leader@leader-back": "node-002"})
    title = "the new leader keeps leading"
    assert failed(r)[title] == texts(raw["leader-back"], title)
    assert "node-001 still leads" in next(c.detail for c in r.checks if c.title == title)


def test_a_swarm_that_still_answers_has_not_lost_its_quorum(fake_time: FakeTime) -> None:
    ex, raw = steps_of("quorum-loss")
    _, target = swarm(ex)
    target.shell = lambda node, cmd: (0, "ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS\n… node-003 Ready Active Leader\n")
    r = graded(ex, target, fake_time)
    title = "node-003 reports that the swarm has no leader"
    assert failed(r) == {title: texts(raw["quorum-loss"], title)}
    assert set(target.commands) == {("node-003", "docker node ls")}
    no_leader = ("Error response from daemon: rpc error: code = Unknown desc = The swarm does not have a leader. "
                 "It's possible that too few managers are online. Make sure more than half of the managers are online.")
    target.shell = lambda node, cmd: (1, no_leader)
    assert graded(ex, target, fake_time).passed


def test_left_the_swarm_but_did_not_remove_the_node(fake_time: FakeTime) -> None:
    ex, raw = steps_of("leave")
    cluster, target = swarm(ex, workers=("node-003",))
    cluster.node("node-003")["Status"]["State"] = "down"
    cluster.local_state["node-003"] = "inactive"
    cluster.add_service("web", image="nginx:1.22", replicas=3, ports=[(80, 80)])
    cluster.run_replicas("web", ["node-001", "node-002"], 3)
    r = graded(ex, target, fake_time)
    title = "the node list has two entries"
    assert failed(r) == {title: texts(raw["leave"], title)}
