"""Fixtures for exercise tests: a fake clock (polling without sleeping) and sessions on a fake swarm."""

from __future__ import annotations

from typing import Any

import pytest

from labctl.exercises.model import Exercise, parse_exercise
from labctl.exercises.polling import Clock
from labctl.exercises.session import Session
from tests.unit.exercises.fakedocker import FakeCluster, FakeTarget, swarm_lab


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += max(s, 0.01)

    @property
    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def lab() -> tuple[FakeCluster, FakeTarget]:
    return swarm_lab(managers=1, workers=2)


def exercise(steps: list[dict[str, Any]], **extra: Any) -> Exercise:
    data: dict[str, Any] = {"id": "t", "title": "test", "topology": {"managers": 1, "workers": 2}, "steps": steps}
    data.update(extra)
    return parse_exercise(data)


def session(ex: Exercise, target: FakeTarget, ft: FakeTime) -> Session:
    return Session(ex, target, clock=ft.clock, interval=0.5)
