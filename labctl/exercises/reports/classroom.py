"""GitHub Classroom autograding output: the base64 JSON a runner step publishes as its `result` output,
which `classroom-resources/autograding-grading-reporter` reads (`<RUNNER>_RESULTS`) to score the work.

Shape: {version: 1, status: pass|fail|error, max_score, tests: [{name, status, score, message,
test_code, filename, line_no, duration}]}, duration in milliseconds.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from labctl.exercises.results import LabResult

STATUS = {"passed": "pass", "failed": "fail", "skipped": "fail", "error": "error"}


def payload(r: LabResult, exercise_file: str = "") -> dict[str, Any]:
    tests = []
    for c in r.checks:
        message = c.detail if c.passed else " — ".join(x for x in (c.message, c.detail, f"hint: {c.hint}" if c.hint else "") if x)
        tests.append({
            "name": f"{c.id}: {c.title}", "status": STATUS[c.status], "score": c.score, "message": message,
            "test_code": f"{c.kind} (lab {r.lab})", "filename": exercise_file, "line_no": 0,
            "duration": int(c.duration * 1000),
        })
    status = "error" if r.error and not r.checks else ("pass" if r.passed else "fail")
    return {"version": 1, "status": status, "max_score": r.max_score, "tests": tests}


def encode(r: LabResult, exercise_file: str = "") -> str:
    return base64.b64encode(json.dumps(payload(r, exercise_file)).encode()).decode()


def publish_github_output(encoded: str, name: str = "result") -> bool:
    """Append `result=<b64>` to $GITHUB_OUTPUT when running in GitHub Actions; False elsewhere."""
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        return False
    with Path(target).open("a") as fh:
        fh.write(f"{name}={encoded}\n")
    return True
