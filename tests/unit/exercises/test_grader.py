"""`labctl grade`: checks only, `at: step` from the run's record, classes graded in parallel."""

from __future__ import annotations

import threading
import time

from labctl.exercises.grader import grade, grade_many
from labctl.exercises.progress import Progress
from labctl.exercises.results import LabResult
from labctl.exercises.session import Session
from tests.unit.exercises.conftest import FakeTime, exercise
from tests.unit.exercises.fakedocker import swarm_lab
from tests.unit.exercises.smokestate import smoke, solved

DRAINED = {"title": "worker1 was drained", "kind": "node.availability", "at": "step", "points": 2,
           "params": {"node": "worker1", "availability": "drain"}}
ACTIVE = {"title": "worker1 is back", "kind": "node.availability", "params": {"node": "worker1", "availability": "active"}}


def test_grade_applies_nothing(fake_time: FakeTime) -> None:
    _, target = solved()
    r = grade(Session(smoke(), target, clock=fake_time.clock), "smoke")
    assert r.passed and target.commands == [] and target.driver.calls == []


def test_at_step_uses_the_recorded_result(fake_time: FakeTime) -> None:
    _, target = swarm_lab(managers=1, workers=2)
    ex = exercise([{"id": "drain", "title": "d", "checks": [DRAINED]}, {"id": "back", "title": "b", "checks": [ACTIVE]}])
    session = Session(ex, target, clock=fake_time.clock)
    r = grade(session, "t")  # never run: the step check cannot be known
    assert [c.status for c in r.checks] == ["failed", "passed"]
    assert "not verified during a run" in r.checks[0].detail and r.score == 1
    prog = Progress("t", "t")
    from labctl.exercises.results import CheckResult

    prog.record(CheckResult("drain.1", "drain", "worker1 was drained", "node.availability", 2, "passed", "drained"))
    r = grade(session, "t", prog)
    assert r.passed and r.score == 3


def test_leader_changed_uses_the_runs_baseline(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=3, workers=0)
    ex = exercise([{"id": "f", "title": "f", "checks": [{"title": "new leader", "kind": "node.leader_changed", "within": 0}]}],
                  topology={"managers": 3})
    cluster.set_leader("manager2")
    prog = Progress("t", "t", memory={"leader@f": "manager1"})
    assert grade(Session(ex, target, clock=fake_time.clock), "t", prog).passed


def test_threshold_override(fake_time: FakeTime) -> None:
    _, target = swarm_lab(managers=1, workers=2)
    ex = exercise([{"title": "a", "checks": [ACTIVE, {**ACTIVE, "params": {"node": "worker2", "availability": "drain"}}]}],
                  passing=50)
    session = Session(ex, target, clock=fake_time.clock)
    assert grade(session, "t", max_wait=0).passed
    assert not grade(session, "t", threshold=75, max_wait=0).passed


def test_class_is_graded_in_parallel() -> None:
    active = {"n": 0, "max": 0}
    lock = threading.Lock()

    def job(i: int) -> LabResult:
        with lock:
            active["n"] += 1
            active["max"] = max(active["max"], active["n"])
        time.sleep(0.05)
        with lock:
            active["n"] -= 1
        return LabResult("smoke", "s", f"lab{i}", 100.0)

    t0 = time.monotonic()
    results = grade_many([lambda i=i: job(i) for i in range(10)])
    assert [r.lab for r in results] == [f"lab{i}" for i in range(10)]
    assert active["max"] == 10 and time.monotonic() - t0 < 0.4
    assert grade_many([]) == []
