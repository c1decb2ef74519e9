"""The labs for tutorials 003 (swarmkit-basics) and 004 (dca-prep) on the fake swarm: the solved state
scores the step's checks, and a typical wrong student action fails the right check with its hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labctl.exercises.grader import grade
from labctl.exercises.model import Exercise, load_exercise
from labctl.exercises.results import LabResult
from labctl.exercises.session import Session
from tests.unit.exercises.conftest import FakeTime
from tests.unit.exercises.fakedocker import NS, FakeCluster, FakeTarget

LABS = Path(__file__).resolve().parents[3] / "labs"


def lab_exercise(lab_id: str, step: str) -> Exercise:
    """The lab reduced to one step, graded at the end (the fake holds only that step's state)."""
    ex = load_exercise(LABS / f"{lab_id}.yaml")
    picked = [s for s in ex.steps if s.id == step]
    assert picked, f"{lab_id} has no step {step}"
    checks = [c.model_copy(update={"at": "end"}) for c in picked[0].checks]
    steps = [picked[0].model_copy(update={"checks": checks})]
    return ex.model_copy(update={"steps": steps, "points": sum(c.points for c in checks)})


def cluster_of(names: list[tuple[str, str]], lab: str) -> tuple[FakeCluster, FakeTarget]:
    cluster = FakeCluster(lab)
    target = FakeTarget(cluster, names)
    for info in target.lab.nodes:
        cluster.add_node(info.name, info.role, leader=info.role == "manager", ip=info.ip)
    return cluster, target


def graded(ex: Exercise, target: FakeTarget, ft: FakeTime) -> LabResult:
    return grade(Session(ex, target, clock=ft.clock), target.lab.name, max_wait=1)


def failed(r: LabResult) -> dict[str, tuple[str, str]]:
    return {c.title: (c.message, c.hint) for c in r.checks if not c.passed}


# ----- swarmkit-basics (tutorial 003) ----------------------------------------------------------------------
SK_NODES = [("docker1", "manager"), ("docker2", "worker"), ("docker3", "worker")]


def sk_drain(drained: bool, scaled: str = "redis") -> FakeTarget:
    cluster, target = cluster_of(SK_NODES, "swarmkit-basics")
    update = {"Parallelism": 3, "Delay": 2 * NS}
    cluster.add_service("redis", image="redis:3.0.7", replicas=6 if scaled == "redis" else 5, update=update)
    cluster.add_service("probe", image="busybox:latest", replicas=None, mode="global")
    placement = ["docker2", "docker3"] if drained else ["docker1", "docker2", "docker3"]
    cluster.run_replicas("redis", placement, 6)
    if drained:
        cluster.node("docker1")["Spec"]["Availability"] = "drain"
    return target


def test_swarmkit_drain_done_right(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("swarmkit-basics", "drain"), sk_drain(True), fake_time)
    assert r.passed and r.score == r.max_score, failed(r)


def test_swarmkit_forgot_to_drain(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("swarmkit-basics", "drain"), sk_drain(False), fake_time)
    assert failed(r) == {
        "docker1 is drained": ("docker1 still accepts tasks.", "`docker node update --availability drain docker1`"),
        "no redis task runs on docker1": (
            "redis still runs on docker1.",
            "Drain the node (pause is not enough — it keeps the tasks that already run there)."),
    }


def test_swarmkit_paused_instead_of_drained(fake_time: FakeTime) -> None:
    target = sk_drain(False)
    target.cluster.node("docker1")["Spec"]["Availability"] = "pause"
    r = graded(lab_exercise("swarmkit-basics", "drain"), target, fake_time)
    assert set(failed(r)) == {"docker1 is drained", "no redis task runs on docker1"}
    assert "availability is pause" in next(c.detail for c in r.checks if c.title == "docker1 is drained")


def test_swarmkit_scaled_the_wrong_service(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("swarmkit-basics", "drain"), sk_drain(True, scaled="probe"), fake_time)
    assert failed(r) == {"redis still runs 6/6, on docker2 and docker3": (
        "redis lost replicas.", "Scale redis, not another service: `docker service scale redis=6`.")}


def sk_waves(update: dict[str, Any] | None) -> FakeTarget:
    cluster, target = cluster_of(SK_NODES, "swarmkit-basics")
    cluster.add_service("redis", image="redis:3.0.7", replicas=6, update=update)
    cluster.run_replicas("redis", ["docker1", "docker2", "docker3"], 6)
    return target


def test_swarmkit_waves_done_right(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("swarmkit-basics", "update-waves"), sk_waves({"Parallelism": 3, "Delay": 2 * NS}), fake_time)
    assert r.passed, failed(r)


def test_swarmkit_updated_without_delay(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("swarmkit-basics", "update-waves"), sk_waves({"Parallelism": 3}), fake_time)
    assert failed(r) == {"redis updates 3 at a time with a 2s delay": (
        "redis is not configured to update three tasks at a time with a 2s pause.",
        "`docker service update --update-parallelism 3 --update-delay 2s redis`")}
    assert "delay is 0, expected 2" in next(c.detail for c in r.checks if not c.passed)


# ----- dca-prep (tutorial 004) -----------------------------------------------------------------------------
DCA_NODES = [("master", "manager"), ("node01", "worker"), ("node02", "worker")]


def dca_ping(scaled: str) -> FakeTarget:
    cluster, target = cluster_of(DCA_NODES, "dca-prep")
    cluster.add_service("pingtest", image="alpine:latest", replicas=3 if scaled == "pingtest" else 1)
    cluster.add_service("other", image="alpine:latest", replicas=3 if scaled == "other" else 1)
    nodes = ["master", "node01", "node02"]
    cluster.run_replicas("pingtest", nodes, 3 if scaled == "pingtest" else 1)
    cluster.run_replicas("other", nodes, 3 if scaled == "other" else 1)

    def shell(node: str, cmd: str) -> tuple[int, str]:
        if cmd.startswith("docker service logs"):
            return 0, "pingtest.1.abc@master | 64 bytes from 127.0.0.1: seq=1 ttl=64 time=0.05 ms\n"
        if cmd.startswith("docker node ps") and cmd.endswith("node01"):
            on = [t for t in cluster.tasks if t["NodeID"] == cluster.node("node01")["ID"]]
            names = {sid: s["Spec"]["Name"] for sid, s in cluster.services.items()}
            return 0, "".join(f"{names[t['ServiceID']]}.{t['Slot']}\n" for t in on)
        return 127, f"unsupported in the fake: {cmd}"

    target.shell = shell
    return target


def test_dca_pingtest_done_right(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("dca-prep", "pingtest"), dca_ping("pingtest"), fake_time)
    assert r.passed and r.score == r.max_score, failed(r)


def test_dca_scaled_the_wrong_service(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("dca-prep", "pingtest"), dca_ping("other"), fake_time)
    assert failed(r) == {
        "pingtest runs 3/3": ("pingtest does not run three tasks.", "`docker service scale pingtest=3`"),
        "one pingtest task per node": (
            "The three pingtest tasks are not spread one per node.",
            "`docker node ps NODE` lists a node's tasks; a drained or paused node gets none."),
        "node ps on node01 lists a pingtest task": (
            "`docker node ps node01` shows no running pingtest task.",
            "Scale pingtest to 3 so that every node gets one."),
    }


def dca_secret(created: bool, value: str = "S3cr3t-dca\n") -> FakeTarget:
    """The secrets step solved: db_pass holds `value`, MySQL took its root password from it (so the
    client logs in with the lab's password only if `value` is that password)."""
    cluster, target = cluster_of(DCA_NODES, "dca-prep")
    if created:
        cluster.secrets.append({"ID": "sec1", "Spec": {"Name": "db_pass"}})
    cluster.add_service("mysql_database", image="mysql:5.7", replicas=1, ports=[(3306, 3306)])
    files = {"/run/secrets/db_pass": value} if created else {}
    cluster.add_task("mysql_database", "node01", slot=1, files=files)

    def shell(node: str, cmd: str) -> tuple[int, str]:
        if cmd.startswith("docker service inspect"):
            return 0, "db_pass=db_pass MYSQL_ROOT_PASSWORD_FILE=/run/secrets/db_pass \n"
        if cmd.startswith("mysql ") and "-pS3cr3t-dca" in cmd:
            if value.strip() != "S3cr3t-dca":
                return 1, "ERROR 1045 (28000): Access denied for user 'root'@'10.0.0.2' (using password: YES)\n"
            return 0, "dca\ninformation_schema\nmysql\nperformance_schema\nsys\n"
        return 127, f"unsupported in the fake: {cmd}"

    target.shell = shell
    return target


def test_dca_secret_done_right(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("dca-prep", "secrets"), dca_secret(True), fake_time)
    assert r.passed and r.score == r.max_score, failed(r)


def test_dca_forgot_the_secret(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("dca-prep", "secrets"), dca_secret(False), fake_time)
    assert failed(r)["the secret db_pass exists"] == (
        "There is no secret named db_pass.",
        "`echo 'S3cr3t-dca' | docker secret create db_pass -` (mind the final `-`: read from stdin).")
    assert set(failed(r)) == {"the secret db_pass exists", "the task reads the password at /run/secrets/db_pass"}


def test_dca_secret_with_another_password(fake_time: FakeTime) -> None:
    r = graded(lab_exercise("dca-prep", "secrets"), dca_secret(True, value="hunter2\n"), fake_time)
    assert set(failed(r)) == {"the task reads the password at /run/secrets/db_pass",
                              "root logs in with the secret's password and finds the database dca"}
    login = next(c for c in r.checks if c.title.startswith("root logs in"))
    assert "Access denied" in login.detail and login.hint.startswith("`mysql -h <node address> -u root -pS3cr3t-dca`")
    readable = next(c for c in r.checks if c.title.startswith("the task reads"))
    assert "hunter2" not in readable.detail + str(readable.observed)  # the content is never reported


@pytest.mark.parametrize("ports, ok", [("80->30000/ingress ", True), ("80->32767/ingress ", True),
                                       ("80->8080/ingress ", False), ("80->32768/ingress ", False),
                                       ("", False)])
def test_dca_auto_assigned_port(fake_time: FakeTime, ports: str, ok: bool) -> None:
    cluster, target = cluster_of(DCA_NODES, "dca-prep")
    cluster.add_service("webserver", image="nginx:latest", replicas=1)
    cluster.run_replicas("webserver", ["node01"], 1)
    target.shell = lambda node, cmd: (0, ports + "\n")
    r = graded(lab_exercise("dca-prep", "webserver"), target, fake_time)
    title = "port 80 is published on a port the swarm chose (30000-32767)"
    assert (title not in failed(r)) == ok, failed(r)
    if not ok:
        assert failed(r)[title][1].startswith("`docker service update --publish-add 80 webserver`")


def test_both_labs_validate() -> None:
    for lab_id in ("swarmkit-basics", "dca-prep"):
        ex = load_exercise(LABS / f"{lab_id}.yaml")
        assert ex.points == sum(c.points for s in ex.steps for c in s.checks)
        assert all(s.run for s in ex.steps[1:]), f"{lab_id}: every step after the first has a solution"
        assert all(c.hint and c.failure for s in ex.steps for c in s.checks)
