"""The CLI verbs: `validate`, and `grade` writing every report (on a lab that does not exist: an error
result, still valid reports, exit 1)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import xmlschema
from typer.testing import CliRunner

from labctl.cli import app
from labctl.exercises.model import ExerciseError
from tests.unit.exercises.test_reports import XSD, check_classroom_shape


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABCTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    return tmp_path


def test_validate(home: Path) -> None:
    res = CliRunner().invoke(app, ["validate", "smoke"])
    assert res.exit_code == 0 and "ok smoke: 2 steps, 7 checks, 10 points" in res.output
    bad = home / "bad.yaml"
    bad.write_text("id: bad\ntitle: x\ntopology: {managers: 1}\nsteps: [{title: a, checks: [{title: c, kind: nope}]}]\n")
    res = CliRunner().invoke(app, ["validate", str(bad)])
    assert isinstance(res.exception, ExerciseError) and res.exception.exit_code == 2  # main() exits 2 with it
    assert "unknown check kind 'nope'" in str(res.exception)


def test_grade_a_missing_class_writes_valid_reports(home: Path) -> None:
    out = home / "grades"
    res = CliRunner().invoke(app, ["grade", "smoke", "--lab", "s1", "--lab", "s2", "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "class.json", "class.junit.xml", "s1.classroom.b64", "s1.json", "s1.junit.xml",
        "s2.classroom.b64", "s2.json", "s2.junit.xml"]
    schema = xmlschema.XMLSchema(str(XSD))
    for f in out.glob("*.junit.xml"):
        schema.validate(str(f))
    doc = json.loads(base64.b64decode((out / "s1.classroom.b64").read_text()))
    check_classroom_shape(doc)
    assert doc["status"] == "error"
    assert "no lab named 's1'" in json.loads((out / "s1.json").read_text())["labs"][0]["error"]
