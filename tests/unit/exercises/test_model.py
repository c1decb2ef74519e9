"""The exercise format: strict validation with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.exercises.model import ExerciseError, find_exercise, load_exercise, parse_exercise
from tests.unit.exercises.conftest import exercise

REPO = Path(__file__).resolve().parents[3]
CHECK = {"title": "c", "kind": "service.replicas", "params": {"service": "web", "replicas": 2}}


def test_defaults_and_ids() -> None:
    ex = exercise([{"title": "a", "checks": [CHECK, {**CHECK, "id": "mine"}]}, {"title": "b", "checks": [CHECK]}])
    assert [c.id for c in ex.checks] == ["step1.1", "mine", "step2.1"]
    assert ex.max_score == 3
    assert ex.checks[0].within == 10.0
    assert ex.lab.name == "t" and [n.name for n in ex.lab.nodes] == ["manager1", "worker1", "worker2"]
    assert ex.checks[0].args.replicas == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(("steps", "extra", "message"), [
    ([{"title": "a", "checks": [{**CHECK, "kind": "service.replica"}]}], {}, "unknown check kind 'service.replica'"),
    ([{"title": "a", "checks": [{**CHECK, "params": {"service": "web"}}]}], {}, "params of service.replicas: replicas: Field required"),
    ([{"title": "a", "checks": [{**CHECK, "params": {"service": "web", "replicas": 2, "x": 1}}]}], {}, "x: unknown field"),
    ([{"title": "a", "checks": [{**CHECK, "within": "soon"}]}], {}, "steps[0].checks[0].within"),
    ([{"title": "a", "checks": [CHECK]}], {"points": 5}, "points: 5 given, but the checks add up to 1"),
    ([{"title": "a", "run": [{"node": "manager9", "cmd": "true"}]}], {}, "node 'manager9' is not in the topology"),
    ([{"title": "a", "fault": [{"halt": "worker7"}]}], {}, "node 'worker7' is not in the topology"),
    ([{"title": "a", "fault": [{"halt": "worker1", "heal": True}]}], {}, "exactly one of"),
    ([{"title": "a", "fault": [{"partition": [["manager1"]]}]}], {}, "two or more non-empty groups"),
    ([{"title": "a", "checks": [{**CHECK, "kind": "node.status", "params": {"node": "nope"}}]}], {}, "node 'nope'"),
    ([{"title": "a", "checks": [{**CHECK, "kind": "node.leader_changed", "params": {"since": "zz"}}]}], {}, "no step 'zz'"),
    ([{"title": "a", "id": "x"}, {"title": "b", "id": "x"}], {}, "step id 'x' is used twice"),
    ([{"title": "a", "checks": [{**CHECK, "id": "k"}, {**CHECK, "id": "k"}]}], {}, "check id 'k' is used twice"),
    ([{"title": "a", "tpyo": 1}], {}, "steps[0].tpyo: unknown field"),
    ([{"title": "a"}], {"topology": {"managers": 0, "workers": 1}}, "swarm: form needs at least one node"),
    ([], {}, "steps: List should have at least 1 item"),
    ([{"title": "a", "checks": [{**CHECK, "kind": "command.output", "params": {"command": "x"}}]}], {}, "give service"),
])
def test_errors_name_the_field(steps: list[dict[str, object]], extra: dict[str, object], message: str) -> None:
    with pytest.raises(ExerciseError) as e:
        exercise(steps, **extra)
    assert message in str(e.value)


def test_selectors_are_valid_nodes() -> None:
    ex = exercise([{"title": "a", "checks": [{**CHECK, "kind": "node.status", "params": {"node": "workers"}}]}])
    assert ex.checks[0].args.node == "workers"  # type: ignore[attr-defined]


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ExerciseError, match="top level must be a mapping"):
        parse_exercise([1, 2])


def test_load_reports_yaml_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntitle: [unclosed\n")
    with pytest.raises(ExerciseError, match="not valid YAML at line"):
        load_exercise(bad)


def test_every_shipped_lab_loads() -> None:
    files = sorted((REPO / "labs").glob("*.yaml"))
    assert files, "labs/ has no exercises"
    for f in files:
        ex = load_exercise(f)
        assert ex.id == f.stem
        assert (REPO / "labs" / ex.id / "README.md").is_file()


def test_smoke_lab_shape() -> None:
    ex = load_exercise(REPO / "labs" / "smoke.yaml")
    assert ex.lab.swarm == "form"
    assert {(n.name, n.role) for n in ex.lab.nodes} == {("manager1", "manager"), ("worker1", "worker")}
    kinds = {c.kind for c in ex.checks}
    assert {"swarm.state", "node.status", "service.replicas", "http.get"} <= kinds
    assert ex.max_score == ex.points == 10
    assert any(r.cmd.startswith("docker service create") for s in ex.steps for r in s.run)


def test_find_by_id_and_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_exercise("smoke") == REPO / "labs" / "smoke.yaml"
    assert find_exercise(str(REPO / "labs" / "smoke.yaml")).name == "smoke.yaml"
    with pytest.raises(ExerciseError, match="no exercise 'nope'"):
        find_exercise("nope")
    monkeypatch.setenv("LABCTL_LABS", str(tmp_path))
    (tmp_path / "smoke.yaml").write_text("x")
    assert find_exercise("smoke") == tmp_path / "smoke.yaml"
