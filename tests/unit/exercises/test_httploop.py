"""The `http.loop` kind: a client loop started with its step counts failed requests while the step
happens (a rolling update), and the check judges the count once the update has completed. The loop is a
real thread against the fake swarm's HTTP; polling advances a fake clock a little real time per round."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from labctl.exercises.checks.httploop import ClientLoop
from labctl.exercises.grader import grade
from labctl.exercises.model import ExerciseError
from labctl.exercises.polling import Clock
from labctl.exercises.progress import Progress
from labctl.exercises.runner import run_auto, run_guided
from labctl.exercises.session import Session
from labctl.exercises.target import HttpResponse
from tests.unit.exercises.conftest import FakeTime, exercise
from tests.unit.exercises.fakedocker import FakeCluster, FakeTarget, swarm_lab
from tests.unit.exercises.test_runner import Saves, ScriptedUI

LOOP = {"title": "no failed request", "kind": "http.loop", "at": "step", "within": "30s",
        "params": {"port": 80, "service": "web", "interval": "10ms", "min_requests": 5},
        "failure": "Clients saw failures.", "hint": "Update one task at a time."}
COMPLETED = {"State": "completed", "StartedAt": "2024-01-01T00:00:01Z", "CompletedAt": "2024-01-01T00:00:09Z"}


def slow_clock(ft: FakeTime) -> Clock:
    """Fake time for the budgets, a little real time per round so the loop's thread can work."""

    def sleep(s: float) -> None:
        time.sleep(0.01)
        ft.sleep(s)

    return Clock(ft.now, sleep)


class Web:
    """A service `web` whose `docker service update` (the step's `run`) completes an update, and an HTTP
    side that fails while `failing` requests are left."""

    def __init__(self, cluster: FakeCluster, target: FakeTarget, failing: int = 0, completes: bool = True) -> None:
        self.sid = cluster.add_service("web", image="nginx:1.22", replicas=3, ports=[(80, 80)])
        self.cluster = cluster
        self.failing = failing
        self.completes = completes
        self.lock = threading.Lock()
        self.urls: list[str] = []
        target.http = self.http
        target.shell = self.shell

    def http(self, url: str) -> HttpResponse:
        with self.lock:
            self.urls.append(url)
            if self.failing > 0:
                self.failing -= 1
                raise ConnectionRefusedError(111, "Connection refused")
        return HttpResponse(200, {"Server": "nginx/1.22.1"}, "Welcome to nginx!")

    def shell(self, node: str, cmd: str) -> tuple[int, str]:
        if self.completes:
            self.cluster.services[self.sid]["UpdateStatus"] = dict(COMPLETED)
        return 0, "web\n"


def rolling(extra: dict[str, Any] | None = None) -> Any:
    return exercise([{"id": "rolling", "title": "update web",
                      "run": [{"node": "manager1", "cmd": "docker service update --image nginx:1.22 web"}],
                      "checks": [{**LOOP, **(extra or {})}]}])


def test_the_kind_needs_at_step() -> None:
    with pytest.raises(ExerciseError, match=r"http\.loop watches its step as it happens.*at: step"):
        exercise([{"title": "a", "checks": [{**LOOP, "at": "end"}]}])
    with pytest.raises(ExerciseError, match="node 'nobody' is not in the topology"):
        exercise([{"title": "a", "checks": [{**LOOP, "params": {"port": 80, "nodes": "nobody"}}]}])


def test_an_update_without_failures_passes(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    web = Web(cluster, target)
    session = Session(rolling(), target, clock=slow_clock(fake_time))
    r = run_auto(session, "t", saver=Saves())
    check = r.checks[0]
    assert r.passed, check.detail
    assert check.observed["failed"] == 0 and check.observed["requests"] >= 5
    assert check.detail.endswith("0 failed while web was updated")
    # the loop went round the three nodes' lab addresses, and it is stopped with the run
    assert {u.split("/")[2] for u in web.urls} == {"10.9.0.11:80", "10.9.0.12:80", "10.9.0.13:80"}
    assert session.watchers == {}
    assert not any(t.name.startswith("client-loop") for t in threading.enumerate())


def test_failed_requests_fail_the_check_with_its_hint(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    Web(cluster, target, failing=3)
    r = run_auto(Session(rolling(), target, clock=slow_clock(fake_time)), "t", saver=Saves())
    check = r.checks[0]
    assert not r.passed and check.observed["failed"] == 3
    assert (check.message, check.hint) == ("Clients saw failures.", "Update one task at a time.")
    assert "3 failed since the step started (at most 0 allowed)" in check.detail
    assert "manager1: [Errno 111] Connection refused" in check.detail
    assert len(check.observed["errors"]) == 3


def test_max_failed_tolerates_some(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    Web(cluster, target, failing=2)
    params = {**LOOP["params"], "max_failed": 2}  # type: ignore[dict-item]
    r = run_auto(Session(rolling({"params": params}), target, clock=slow_clock(fake_time)), "t", saver=Saves())
    assert r.passed, r.checks[0].detail


def test_the_window_closes_only_when_an_update_of_the_step_completes(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    web = Web(cluster, target, completes=False)
    r = run_auto(Session(rolling({"within": "2s"}), target, clock=slow_clock(fake_time)), "t", saver=Saves())
    assert not r.passed and "no update of web begun in this step has completed (no update yet)" in r.checks[0].detail
    # an update that had completed before the step started does not count either
    cluster.services[web.sid]["UpdateStatus"] = dict(COMPLETED)
    r = run_auto(Session(rolling({"within": "2s"}), target, clock=slow_clock(fake_time)), "t", saver=Saves())
    assert "(completed)" in r.checks[0].detail and not r.passed
    # a paused update shows its state
    cluster.services[web.sid]["UpdateStatus"] = {"State": "paused", "StartedAt": "2024-01-02T00:00:00Z"}
    r = run_auto(Session(rolling({"within": "1s"}), target, clock=slow_clock(fake_time)), "t", saver=Saves())
    assert "(paused)" in r.checks[0].detail


def test_too_few_requests_is_not_a_pass(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    Web(cluster, target)
    params = {"port": 80, "interval": "1h", "min_requests": 5}  # one request, then the loop waits
    r = run_auto(Session(rolling({"params": params, "within": 0}), target, clock=slow_clock(fake_time)), "t", saver=Saves())
    assert not r.passed and "at least 5 needed" in r.checks[0].detail


def test_grade_without_a_run_cannot_pass(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    Web(cluster, target)
    r = grade(Session(rolling(), target, clock=fake_time.clock), "t")
    assert not r.passed and r.checks[0].detail == "not verified during a run of the lab (labctl run)"
    # evaluated outside a step (no watcher), the kind says why it cannot judge
    session = Session(rolling(), target, clock=fake_time.clock)
    out = session.check([("rolling", rolling().checks[0].model_copy(update={"within": 0}))])
    assert out[0].detail == "no client loop ran during this step (only `labctl run` runs one)"


def test_guided_runs_the_loop_while_the_student_works_and_stops_it_on_quit(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    web = Web(cluster, target, completes=False)
    session = Session(rolling(), target, clock=slow_clock(fake_time))

    def student(choice: str) -> None:
        if choice == "check":  # the student updated web by hand while the loop ran
            loop = session.watchers["rolling.1"]
            assert isinstance(loop, ClientLoop)
            deadline = time.monotonic() + 5
            while loop.stats().requests < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            cluster.services[web.sid]["UpdateStatus"] = dict(COMPLETED)

    prog = Progress("t", "t")
    result = run_guided(session, prog, ScriptedUI(["check"], on_ask=student), saver=Saves())
    assert result is not None and result.passed, [c.detail for c in result.checks]
    assert session.watchers == {}
    # quitting stops the loop; resuming starts a new one for the new attempt
    prog2 = Progress("t", "t")
    run_guided(Session(rolling(), target, clock=slow_clock(fake_time)), prog2, ScriptedUI(["quit"]), saver=Saves())
    assert not any(t.name.startswith("client-loop") for t in threading.enumerate())
    assert prog2.faulted == ["rolling"]
