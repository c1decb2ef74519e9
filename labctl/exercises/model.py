"""The exercise format (`labs/<id>.yaml`), validated strictly like `lab.yaml`: a typo in a lab must fail
when the teacher loads it, not in front of a class. See docs/labs.md for the format.

Each check's `params` are validated by its kind's own model (see `checks/`), and every node a step
names must be in the topology.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from labctl.errors import UsageError
from labctl.exercises.checks.registry import Params, get_kind
from labctl.exercises.durations import Duration
from labctl.spec import LabSpec, SpecError, _format_errors, parse_spec
from labctl.yamlfile import read_yaml

ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
NODE_SELECTORS = ("all", "managers", "workers")


class ExerciseError(UsageError):
    """An exercise file that cannot be used; the message names the field (exit code 2)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckSpec(Strict):
    """One graded check: what to verify (kind + params), its points, and what the student is told."""

    id: str = ""  # unique in the exercise; default <step id>.<n>
    title: str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    points: int = Field(1, ge=0)
    within: Duration = 10.0  # polled until true for this long
    hint: str = ""  # shown on failure
    failure: str = ""  # the failure message (default: the title)
    at: Literal["end", "step"] = "end"  # grade: evaluate at the end, or use the result from the run
    _args: Params = PrivateAttr()

    @model_validator(mode="after")
    def _params(self) -> CheckSpec:
        kind = get_kind(self.kind)  # ValueError names the known kinds
        try:
            self._args = kind.params.model_validate(self.params)
        except ValidationError as e:
            raise ValueError(f"params of {self.kind}: {_format_errors(e)}") from None
        if kind.step_only and self.at != "step":
            raise ValueError(f"{self.kind} watches its step as it happens, so only a run can judge it: give it `at: step`")
        return self

    @property
    def args(self) -> Params:
        return self._args

    @property
    def failure_message(self) -> str:
        return self.failure or f"failed: {self.title}"


class RunCommand(Strict):
    """A command the student would type, run on a node by `--auto` (and demos)."""

    node: str
    cmd: str
    timeout: Duration = 120.0
    exit_code: int | None = 0  # None: any exit code is fine


class KillTask(Strict):
    service: str
    node: str | None = None
    slot: int | None = None


class FaultAction(Strict):
    """Exactly one of: halt/start/kill a node, partition, heal, kill a task's container, wait."""

    halt: str | None = None
    start: str | None = None
    kill: str | None = None
    partition: list[list[str]] | None = None
    heal: bool | None = None
    kill_task: KillTask | None = None
    wait: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> FaultAction:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a fault is exactly one of {', '.join(type(self).model_fields)} (got {', '.join(given) or 'none'})")
        if self.partition is not None and (len(self.partition) < 2 or any(not g for g in self.partition)):
            raise ValueError("partition needs two or more non-empty groups, e.g. [[manager1], [manager2, manager3]]")
        return self

    @property
    def action(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    def describe(self) -> str:
        a = self.action
        if a == "partition":
            return "partition " + " | ".join(",".join(g) for g in self.partition or [])
        if a == "heal":
            return "heal the network"
        if a == "kill_task":
            kt = self.kill_task
            assert kt is not None
            return f"kill a task's container of {kt.service}" + (f" on {kt.node}" if kt.node else "")
        if a == "wait":
            return f"wait {self.wait:g}s"
        return f"{a} {getattr(self, a)}"

    def nodes(self) -> list[str]:
        if self.partition is not None:
            return [n for g in self.partition for n in g]
        if self.kill_task is not None:
            return [self.kill_task.node] if self.kill_task.node else []
        value = getattr(self, self.action)
        return [value] if isinstance(value, str) else []


class Step(Strict):
    id: str = ""
    title: str
    explain: str = ""  # markdown shown to the student
    fault: list[FaultAction] = Field(default_factory=list)  # the scene: applied in guided and auto runs
    run: list[RunCommand] = Field(default_factory=list)  # the solution: applied by --auto only
    checks: list[CheckSpec] = Field(default_factory=list)


class Exercise(Strict):
    id: str
    title: str
    description: str = ""
    topology: dict[str, Any]  # a lab spec (lab.yaml), name defaults to the exercise id
    estimated_time: Duration = 600.0
    points: int | None = None  # must equal the sum of the checks' points when given
    passing: float = Field(100.0, ge=0, le=100)  # percent of the points needed to pass
    steps: list[Step] = Field(min_length=1)
    _lab: LabSpec = PrivateAttr()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError(f"{v!r} is not a valid id (lowercase letter first, then a-z, 0-9, '-'; at most 31)")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> Exercise:
        try:
            self._lab = parse_spec({"name": self.id, **self.topology}, "topology")
        except SpecError as e:
            raise ValueError(str(e)) from None
        steps = []
        seen_checks: set[str] = set()
        seen_steps: set[str] = set()
        for i, step in enumerate(self.steps):
            sid = step.id or f"step{i + 1}"
            if sid in seen_steps:
                raise ValueError(f"steps[{i}]: step id {sid!r} is used twice")
            seen_steps.add(sid)
            checks = []
            for j, c in enumerate(step.checks):
                cid = c.id or f"{sid}.{j + 1}"
                if cid in seen_checks:
                    raise ValueError(f"steps[{i}].checks[{j}]: check id {cid!r} is used twice")
                seen_checks.add(cid)
                fixed = c.model_copy(update={"id": cid})
                fixed._args = c.args
                checks.append(fixed)
            steps.append(step.model_copy(update={"id": sid, "checks": checks}))
        object.__setattr__(self, "steps", steps)
        self._check_nodes()
        total = sum(c.points for c in self.checks)
        if self.points is not None and self.points != total:
            raise ValueError(f"points: {self.points} given, but the checks add up to {total}")
        for i, step in enumerate(self.steps):
            for j, c in enumerate(step.checks):
                since = getattr(c.args, "since", None)
                if since is not None and since not in seen_steps:
                    raise ValueError(f"steps[{i}].checks[{j}].params.since: no step {since!r}")
        return self

    def _check_nodes(self) -> None:
        names = {n.name for n in self._lab.nodes}

        def known(where: str, node: str | None, selectors: bool = False) -> None:
            if node is None or (selectors and node in NODE_SELECTORS) or node in names:
                return
            raise ValueError(f"{where}: node {node!r} is not in the topology ({', '.join(sorted(names))})")

        for i, step in enumerate(self.steps):
            for j, r in enumerate(step.run):
                known(f"steps[{i}].run[{j}].node", r.node)
            for j, f in enumerate(step.fault):
                for n in f.nodes():
                    known(f"steps[{i}].fault[{j}]", n)
            for j, c in enumerate(step.checks):
                for field in ("node", "nodes"):
                    value = getattr(c.args, field, None)
                    if isinstance(value, str):
                        known(f"steps[{i}].checks[{j}].params.{field}", value, selectors=True)

    @property
    def lab(self) -> LabSpec:
        """The lab this exercise needs (named after the exercise unless the topology names it)."""
        return self._lab

    @property
    def checks(self) -> list[CheckSpec]:
        return [c for s in self.steps for c in s.checks]

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self.checks)

    def step_of(self, check_id: str) -> Step:
        return next(s for s in self.steps if any(c.id == check_id for c in s.checks))


def parse_exercise(data: Any, source: str = "exercise") -> Exercise:
    if not isinstance(data, dict):
        raise ExerciseError(f"{source}: the top level must be a mapping (id:, title:, topology:, steps:)")
    try:
        return Exercise.model_validate(data)
    except ValidationError as e:
        raise ExerciseError(f"{source}: {_format_errors(e)}") from None


def load_exercise(path: Path) -> Exercise:
    return parse_exercise(read_yaml(path, ExerciseError), str(path))


def search_dirs() -> list[Path]:
    """Where exercises are looked up by id: $LABCTL_LABS, ./labs, then the labs shipped with labctl."""
    dirs = [Path(p) for p in os.environ.get("LABCTL_LABS", "").split(":") if p]
    dirs += [Path.cwd() / "labs", Path(__file__).resolve().parents[2] / "labs"]
    return dirs


def find_exercise(name: str) -> Path:
    """A path to an exercise file, or an exercise id looked up in `search_dirs()`."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ExerciseError(f"{name}: no such exercise file")
        return path
    for d in search_dirs():
        for candidate in (d / f"{name}.yaml", d / f"{name}.yml"):
            if candidate.is_file():
                return candidate
    raise ExerciseError(f"no exercise {name!r} (looked in {', '.join(str(d) for d in search_dirs())})")
