"""A run's progress, saved beside the lab so a guided session can resume after the terminal closes, and so
`grade` knows what the run saw (results of `at: step` checks, the leader when each step started)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import registry
from labctl.exercises.results import CheckResult


@dataclass
class Progress:
    exercise: str
    lab: str
    step: int = 0  # index of the first step not yet passed
    faulted: list[str] = field(default_factory=list)  # steps started: baseline taken, faults applied (never twice)
    memory: dict[str, Any] = field(default_factory=dict)  # baselines, e.g. leader@<step>
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # check id → CheckResult json

    def record(self, result: CheckResult) -> None:
        self.results[result.id] = result.to_json()

    def result(self, check_id: str) -> CheckResult | None:
        data = self.results.get(check_id)
        return CheckResult.from_json(data) if data is not None else None


def path_for(lab: str, exercise: str) -> Path:
    return registry.lab_dir(lab) / "exercises" / f"{exercise}.json"


def load(lab: str, exercise: str) -> Progress:
    """The saved progress, or a fresh one (a damaged file starts over rather than blocking the class)."""
    try:
        data = json.loads(path_for(lab, exercise).read_text())
        return Progress(**data)
    except (OSError, ValueError, TypeError):
        return Progress(exercise=exercise, lab=lab)


def save(p: Progress) -> None:
    path = path_for(p.lab, p.exercise)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(p.__dict__, indent=2, default=str))
    os.replace(tmp, path)


def reset(lab: str, exercise: str) -> None:
    path_for(lab, exercise).unlink(missing_ok=True)
