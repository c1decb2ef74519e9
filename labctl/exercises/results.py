"""Results of checks and of a graded lab: what the reports are made from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "error", "skipped"]


@dataclass
class CheckResult:
    id: str
    step: str
    title: str
    kind: str
    points: int
    status: Status
    detail: str  # what the check found (its own sentence)
    message: str = ""  # the lab's failure message when not passed
    hint: str = ""  # the lab's hint when not passed
    observed: Any = None
    duration: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def score(self) -> int:
        return self.points if self.passed else 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "score": self.score}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**{k: v for k, v in data.items() if k != "score"})


@dataclass
class LabResult:
    exercise: str
    title: str
    lab: str
    threshold: float  # percent needed to pass
    checks: list[CheckResult] = field(default_factory=list)
    started: str = ""  # ISO 8601, UTC
    duration: float = 0.0
    error: str = ""  # the lab could not be graded at all (no lab, bad exercise)

    @property
    def score(self) -> int:
        return sum(c.score for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score else (0.0 if self.error else 100.0)

    @property
    def passed(self) -> bool:
        return not self.error and self.percent + 1e-9 >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "exercise": self.exercise, "title": self.title, "lab": self.lab, "started": self.started,
            "duration": round(self.duration, 3), "score": self.score, "max_score": self.max_score,
            "percent": round(self.percent, 2), "threshold": self.threshold, "passed": self.passed,
            "error": self.error, "checks": [c.to_json() for c in self.checks],
        }
