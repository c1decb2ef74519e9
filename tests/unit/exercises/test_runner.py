"""`labctl run`: --auto applies faults and solutions and verifies; guided mode waits, hints, resumes."""

from __future__ import annotations

from typing import Any

from labctl.exercises.model import Step
from labctl.exercises.progress import Progress
from labctl.exercises.results import CheckResult, LabResult
from labctl.exercises.runner import Choice, run_auto, run_guided
from labctl.exercises.session import Session
from tests.unit.exercises.conftest import FakeTime, exercise
from tests.unit.exercises.fakedocker import swarm_lab
from tests.unit.exercises.smokestate import shell, smoke, smoke_lab


class Saves:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def __call__(self, p: Progress) -> None:
        self.saved.append({"step": p.step, "faulted": list(p.faulted), "results": dict(p.results)})


def test_auto_solves_the_smoke_lab(fake_time: FakeTime) -> None:
    _cluster, target = smoke_lab()
    seen: list[str] = []
    saves = Saves()
    r = run_auto(Session(smoke(), target, clock=fake_time.clock), "smoke", saver=saves,
                 on_step=lambda step, results: seen.append(step.id))
    assert r.passed and r.score == 10, [c.detail for c in r.checks if not c.passed]
    assert seen == ["swarm", "web"]
    assert target.commands == [("manager1", "docker service create --detach --name web --replicas 2 --publish 8080:80 nginx")]
    assert saves.saved[-1]["step"] == 2


def test_auto_stops_at_a_failing_step(fake_time: FakeTime) -> None:
    cluster, target = smoke_lab()
    cluster.node("worker1")["Status"]["State"] = "down"
    r = run_auto(Session(smoke(), target, clock=fake_time.clock), "smoke", saver=Saves())
    assert not r.passed
    statuses = {c.title: c.status for c in r.checks}
    assert statuses["both nodes are ready"] == "failed"
    assert statuses["web runs 2/2 replicas"] == "skipped"
    assert target.commands == []  # the web step never ran


def test_auto_reports_a_failing_command(fake_time: FakeTime) -> None:
    _, target = smoke_lab()
    target.shell = lambda node, cmd: (1, "Error response from daemon: This node is not a swarm manager.")
    r = run_auto(Session(smoke(), target, clock=fake_time.clock), "smoke", saver=Saves())
    assert "exited 1: Error response from daemon" in r.error and not r.passed
    assert all(c.status == "skipped" for c in r.checks if c.step == "web")


def test_faults_and_leader_changed(fake_time: FakeTime) -> None:
    cluster, target = swarm_lab(managers=3, workers=1)
    ex = exercise([{"id": "failover", "title": "The leader dies", "fault": [{"halt": "manager1"}],
                    "checks": [{"title": "a new leader", "kind": "node.leader_changed", "within": "5s"}]}],
                  topology={"managers": 3, "workers": 1})
    real_sleep = fake_time.sleep

    def sleep(s: float) -> None:  # the election takes a moment
        real_sleep(s)
        if fake_time.t > 2:
            cluster.set_leader("manager3")

    fake_time.sleep = sleep  # type: ignore[method-assign]
    session = Session(ex, target, clock=fake_time.clock)
    r = run_auto(session, "t", saver=Saves())
    assert target.driver.calls == [("halt", "manager1")]
    assert r.passed and session.memory == {"leader@failover": "manager1"}
    assert r.checks[0].observed == {"before": "manager1", "now": "manager3"}


class ScriptedUI:
    def __init__(self, choices: list[Choice], on_ask: Any = None) -> None:
        self.choices = choices
        self.on_ask = on_ask
        self.log: list[str] = []

    def show_step(self, step: Step, index: int, total: int) -> None:
        self.log.append(f"step {index + 1}/{total} {step.id}")

    def show_note(self, text: str) -> None:
        self.log.append(text)

    def ask(self) -> Choice:
        choice = self.choices.pop(0)
        if self.on_ask is not None:
            self.on_ask(choice)
        return choice

    def show_results(self, step: Step, results: list[CheckResult]) -> None:
        self.log.append(f"results {step.id} " + " ".join(r.status for r in results))

    def show_hints(self, step: Step, results: list[CheckResult]) -> None:
        self.log += [f"hint {r.hint}" for r in results if not r.passed]

    def show_solution(self, step: Step) -> None:
        self.log += [f"solution {r.cmd}" for r in step.run]

    def show_done(self, result: LabResult) -> None:
        self.log.append(f"done {result.score}/{result.max_score}")


def test_guided_waits_hints_and_moves_on(fake_time: FakeTime) -> None:
    cluster, target = smoke_lab()
    state = {"asked": 0}

    def student(choice: Choice) -> None:
        state["asked"] += 1
        if state["asked"] == 4:  # after a wrong try and a look at the solution, the student gets it right
            shell(cluster, "manager1", "docker service create --name web --replicas 2 -p 8080:80 nginx")

    ui = ScriptedUI(["check", "check", "solution", "check"], on_ask=student)
    prog = Progress("smoke", "smoke")
    saves = Saves()
    session = Session(smoke(), target, clock=fake_time.clock)
    result = run_guided(session, prog, ui, saver=saves)
    assert result is not None and result.passed and result.score == 10
    assert ui.log[0] == "step 1/2 swarm" and ui.log[2] == "step 2/2 web"
    assert any(line.startswith("hint `docker service scale web=2`") for line in ui.log)
    assert "solution docker service create --detach --name web --replicas 2 --publish 8080:80 nginx" in ui.log
    assert ui.log[-1] == "done 10/10"
    assert target.commands == []  # guided mode never runs the solution itself


def test_guided_quit_and_resume(fake_time: FakeTime) -> None:
    _cluster, target = swarm_lab(managers=1, workers=1)
    ex = exercise([
        {"id": "a", "title": "a", "fault": [{"kill": "worker1"}], "checks": [
            {"title": "swarm", "kind": "swarm.state", "params": {"node": "manager1"}}]},
        {"id": "b", "title": "b", "checks": [{"title": "svc", "kind": "service.exists", "params": {"service": "x"}, "within": 0}]},
    ], topology={"managers": 1, "workers": 1})
    prog = Progress("t", "t")
    saves = Saves()
    assert run_guided(Session(ex, target, clock=fake_time.clock), prog, ScriptedUI(["check", "quit"]), saver=saves) is None
    assert prog.step == 1 and prog.faulted == ["a", "b"] and target.driver.calls == [("kill", "worker1")]
    # a new session resumes at step b; step a's fault is not applied again
    ui = ScriptedUI(["skip"])
    result = run_guided(Session(ex, target, clock=fake_time.clock), prog, ui, saver=saves)
    assert result is not None and ui.log[0] == "step 2/2 b"
    assert target.driver.calls == [("kill", "worker1")]
    assert [c.status for c in result.checks] == ["passed", "skipped"] and result.score == 1


def test_guided_fault_failure_stops_cleanly(fake_time: FakeTime) -> None:
    _cluster, target = swarm_lab(managers=1, workers=1)
    ex = exercise([{"title": "a", "fault": [{"kill_task": {"service": "web"}}], "checks": []}],
                  topology={"managers": 1, "workers": 1})
    ui = ScriptedUI([])
    assert run_guided(Session(ex, target, clock=fake_time.clock), Progress("t", "t"), ui, saver=Saves()) is None
    assert "kill a task's container of web failed" in ui.log[-1]


def test_progress_round_trip(tmp_path: Any, monkeypatch: Any) -> None:
    from labctl.exercises import progress as store

    monkeypatch.setenv("LABCTL_HOME", str(tmp_path))
    p = store.load("lab1", "smoke")
    assert p.step == 0
    p.step, p.faulted, p.memory = 1, ["swarm"], {"leader@swarm": "manager1"}
    p.record(CheckResult("c1", "swarm", "t", "swarm.state", 2, "passed", "ok"))
    store.save(p)
    q = store.load("lab1", "smoke")
    assert (q.step, q.faulted, q.memory) == (1, ["swarm"], {"leader@swarm": "manager1"})
    r = q.result("c1")
    assert r is not None and r.score == 2
    store.path_for("lab1", "smoke").write_text("{garbage")
    assert store.load("lab1", "smoke").step == 0
    store.reset("lab1", "smoke")
    assert not store.path_for("lab1", "smoke").exists()
