"""Polling with wait budgets: until true or out of time; one cluster read per round for all checks."""

from __future__ import annotations

from labctl.exercises.polling import poll
from labctl.exercises.session import Session
from tests.unit.exercises.conftest import FakeTime, exercise
from tests.unit.exercises.fakedocker import FakeCluster, FakeTarget

REPLICAS = {"title": "web 2/2", "kind": "service.replicas", "params": {"service": "web", "replicas": 2},
            "within": "5s", "hint": "scale it", "failure": "web is not 2/2"}


def test_polls_until_true(lab: tuple[FakeCluster, FakeTarget], fake_time: FakeTime) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=2)
    ex = exercise([{"title": "a", "checks": [REPLICAS]}])
    ticks = {"n": 0}
    real_sleep = fake_time.sleep

    def sleep(s: float) -> None:  # the second task starts after two rounds
        real_sleep(s)
        ticks["n"] += 1
        if ticks["n"] == 2:
            cluster.run_replicas("web", ["worker1", "worker2"], 2)

    fake_time.sleep = sleep  # type: ignore[method-assign]
    s = Session(ex, target, clock=fake_time.clock)
    [r] = s.check([("step1", ex.checks[0])])
    assert r.passed and r.score == 1 and r.message == "" and r.hint == ""
    assert ticks["n"] == 2 and r.duration == 1.0


def test_gives_up_after_within(lab: tuple[FakeCluster, FakeTarget], fake_time: FakeTime) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=2)
    ex = exercise([{"title": "a", "checks": [REPLICAS, {**REPLICAS, "within": 0, "id": "now"}]}])
    s = Session(ex, target, clock=fake_time.clock)
    r1, r2 = s.check([("step1", c) for c in ex.checks])
    assert (r1.status, r1.message, r1.hint) == ("failed", "web is not 2/2", "scale it")
    assert "0/2" in r1.detail and r1.duration >= 5.0
    assert r2.status == "failed" and r2.duration == 0.0  # within 0: read once
    assert fake_time.t < 6.0  # the budgets overlap, not add up


def test_max_wait_caps_budgets(lab: tuple[FakeCluster, FakeTarget], fake_time: FakeTime) -> None:
    _, target = lab
    ex = exercise([{"title": "a", "checks": [{**REPLICAS, "within": "10m"}]}])
    [r] = Session(ex, target, clock=fake_time.clock).check([("step1", ex.checks[0])], max_wait=2)
    assert not r.passed and fake_time.t < 3


def test_one_read_per_round(lab: tuple[FakeCluster, FakeTarget], fake_time: FakeTime) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=2)
    cluster.run_replicas("web", ["worker1", "worker2"], 2)
    checks = [{**REPLICAS, "id": f"c{i}"} for i in range(10)]
    ex = exercise([{"title": "a", "checks": checks}])
    from labctl.exercises.checks.context import CheckContext

    ctx = CheckContext(target)
    results = poll([("step1", c) for c in ex.checks], ctx, clock=fake_time.clock)
    assert all(r.passed for r in results)
    assert cluster.reads <= 6  # info x1-3, services x1, tasks x1 — not x10


def test_crashing_check_is_an_error(lab: tuple[FakeCluster, FakeTarget], fake_time: FakeTime) -> None:
    cluster, target = lab
    cluster.add_service("web", replicas=2)
    cluster.services[cluster.service_id("web")]["Spec"]["Mode"] = None  # malformed → AttributeError
    cluster.services[cluster.service_id("web")]["Spec"]["Mode"] = {"Replicated": 5}
    ex = exercise([{"title": "a", "checks": [REPLICAS]}])
    [r] = Session(ex, target, clock=fake_time.clock).check([("step1", ex.checks[0])])
    assert r.status == "error" and "check crashed" in r.detail and r.duration == 0.0
