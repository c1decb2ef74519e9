"""What the runner and grader share: checks polled against a target, step baselines, watchers that run
while a step happens (`begin_step`/`end_step`), applying a step's faults and `run` commands."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from labctl import faults
from labctl.errors import LabError
from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.nodes import current_leader, leader_key
from labctl.exercises.checks.registry import CheckError, Watcher, get_kind
from labctl.exercises.model import CheckSpec, Exercise, Step
from labctl.exercises.polling import Clock, poll
from labctl.exercises.results import CheckResult, LabResult
from labctl.exercises.target import Target


class StepActionFailed(LabError):
    """A step's fault or `run` command failed: the lab cannot go on from here."""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Session:
    exercise: Exercise
    target: Target
    memory: dict[str, object] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    interval: float = 0.5
    log: Callable[[str], None] = lambda _msg: None
    watchers: dict[str, Watcher] = field(default_factory=dict)  # check id → what its kind's `begin` started

    def context(self) -> CheckContext:
        return CheckContext(self.target, self.memory, self.watchers)

    def begin_step(self, step: Step) -> None:
        """Start the watchers of the step's checks (e.g. a client loop); a watcher left from an earlier
        showing of the step (a resumed guided session) is replaced, so it covers this attempt."""
        ctx = self.context()
        for c in step.checks:
            kind = get_kind(c.kind)
            if kind.begin is None:
                continue
            self._stop(c.id)
            ctx.step_id, ctx.check_id = step.id, c.id
            self.watchers[c.id] = kind.begin(ctx, c.args)

    def end_step(self, step: Step) -> None:
        for c in step.checks:
            self._stop(c.id)

    def close(self) -> None:
        """Stop every watcher still running (the run ends, or the student quits)."""
        for check_id in list(self.watchers):
            self._stop(check_id)

    def _stop(self, check_id: str) -> None:
        watcher = self.watchers.pop(check_id, None)
        if watcher is not None:
            watcher.stop()

    def record_baseline(self, step: Step) -> None:
        """What `node.leader_changed` compares with: the leader as the step starts (None if unreadable)."""
        ctx = self.context()
        try:
            self.memory[leader_key(step.id)] = current_leader(ctx)
        except CheckError:
            self.memory[leader_key(step.id)] = None

    def apply_faults(self, step: Step) -> None:
        ctx = self.context()
        for f in step.fault:
            value = getattr(f, f.action)
            try:
                done = faults.apply(f.action, value, self.target.driver, ctx.manager, self.target.docker,
                                    sleep=self.clock.sleep)
            except (LabError, CheckError) as e:
                raise StepActionFailed(f"step {step.id}: {f.describe()} failed: {e}") from None
            self.log(f"fault: {done}")

    def apply_runs(self, step: Step) -> None:
        for r in step.run:
            self.log(f"{r.node}$ {r.cmd}")
            rc, out = self.target.node_exec(r.node, r.cmd, r.timeout)
            if r.exit_code is not None and rc != r.exit_code:
                raise StepActionFailed(f"step {step.id}: `{r.cmd}` on {r.node} exited {rc}: {out.strip()[-500:]}")

    def check(self, pairs: Sequence[tuple[str, CheckSpec]], max_wait: float | None = None,
              on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
        return poll(pairs, self.context(), max_wait=max_wait, clock=self.clock, interval=self.interval,
                    on_result=on_result)

    def new_result(self, lab: str, threshold: float | None) -> LabResult:
        return LabResult(self.exercise.id, self.exercise.title, lab,
                         self.exercise.passing if threshold is None else threshold, started=now_iso())


def skipped(step_id: str, c: CheckSpec, why: str) -> CheckResult:
    return CheckResult(c.id, step_id, c.title, c.kind, c.points, "skipped", why, c.failure_message, c.hint)


def elapsed_since(t0: float) -> float:
    return round(time.monotonic() - t0, 3)
