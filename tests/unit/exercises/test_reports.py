"""Reports validate: JUnit XML against tests/data/junit.xsd, the Classroom payload's shape, the JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from labctl.exercises.reports import classroom, jsonreport, junit
from labctl.exercises.results import CheckResult, LabResult

XSD = Path(__file__).resolve().parents[2] / "data" / "junit.xsd"


def sample(lab: str = "s1", error: str = "") -> LabResult:
    r = LabResult("smoke", "Smoke test", lab, 100.0, started="2025-01-02T03:04:05", duration=1.5, error=error)
    if not error:
        r.checks = [
            CheckResult("swarm.1", "swarm", "swarm active", "swarm.state", 1, "passed", "swarm active on a, b"),
            CheckResult("web.3", "web", "web runs 2/2 <replicas> & \"more\"", "service.replicas", 2, "failed",
                        "web runs 1/2 replicas", "web does not run two replicas.", "docker service scale web=2",
                        {"desired": 2, "running": 1}, 30.25),
            CheckResult("web.4", "web", "mesh", "http.get", 2, "skipped", "not run"),
            CheckResult("web.5", "web", "boom", "http.get", 1, "error", "check crashed: KeyError: 'x'", "failed: boom"),
        ]
    return r


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def test_junit_validates(schema: xmlschema.XMLSchema) -> None:
    text = junit.render([sample("s1"), sample("s2"), sample("s3", error="no lab named 's3'")])
    schema.validate(text)
    doc: Any = schema.to_dict(text)
    assert doc["@tests"] == 9 and doc["@failures"] == 2 and doc["@errors"] == 3
    suite = doc["testsuite"][0]
    assert suite["@name"] == "smoke (s1)" and suite["@skipped"] == 1
    failure = suite["testcase"][1]["failure"]
    assert failure["@message"] == "web does not run two replicas."
    assert "hint: docker service scale web=2" in failure["$"]
    assert {p["@name"]: p["@value"] for p in suite["properties"]["property"]}["score"] == "1"
    assert doc["testsuite"][2]["testcase"][0]["error"]["@message"] == "no lab named 's3'"


def test_junit_of_nothing_validates(schema: xmlschema.XMLSchema) -> None:
    schema.validate(junit.render([]))


def test_xsd_rejects_a_broken_report(schema: xmlschema.XMLSchema) -> None:
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate("<testsuites><testsuite name='x'><testcase name='y'/></testsuite></testsuites>")


def check_classroom_shape(doc: dict[str, Any]) -> None:
    """What autograding-grading-reporter reads from a runner's base64 `result`."""
    assert set(doc) == {"version", "status", "max_score", "tests"}
    assert doc["version"] == 1 and doc["status"] in ("pass", "fail", "error")
    assert isinstance(doc["max_score"], int)
    for t in doc["tests"]:
        assert {"name", "status", "score", "message", "test_code", "filename", "line_no", "duration"} <= set(t)
        assert t["status"] in ("pass", "fail", "error")
        assert isinstance(t["score"], int) and isinstance(t["duration"], int) and isinstance(t["line_no"], int)
        assert isinstance(t["name"], str) and isinstance(t["message"], str)


def test_classroom_payload() -> None:
    encoded = classroom.encode(sample(), "labs/smoke.yaml")
    doc = json.loads(base64.b64decode(encoded))
    check_classroom_shape(doc)
    assert doc["status"] == "fail" and doc["max_score"] == 6
    assert [t["status"] for t in doc["tests"]] == ["pass", "fail", "fail", "error"]
    assert [t["score"] for t in doc["tests"]] == [1, 0, 0, 0]
    assert "hint: docker service scale web=2" in doc["tests"][1]["message"]
    assert doc["tests"][1]["duration"] == 30250
    ok = sample()
    ok.checks = ok.checks[:1]
    assert classroom.payload(ok)["status"] == "pass"
    assert classroom.payload(sample(error="no lab"))["status"] == "error"


def test_classroom_github_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    assert not classroom.publish_github_output("abc")
    out = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    assert classroom.publish_github_output("abc")
    assert out.read_text() == "result=abc\n"


def test_json_report() -> None:
    doc = json.loads(jsonreport.render([sample()]))
    assert doc["version"] == 1 and doc["passed"] is False
    lab = doc["labs"][0]
    assert (lab["score"], lab["max_score"], lab["passed"], lab["percent"]) == (1, 6, False, 16.67)
    assert lab["checks"][1]["hint"] == "docker service scale web=2" and lab["checks"][1]["score"] == 0


def test_threshold() -> None:
    r = sample()
    r.threshold = 15
    assert r.passed
    r.threshold = 20
    assert not r.passed
