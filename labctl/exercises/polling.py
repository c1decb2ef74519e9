"""Evaluating checks with a wait budget: all pending checks are read each round (one round reads the
cluster once, see CheckContext), each until it passes or its `within` has run out, so a set of checks
takes as long as its longest budget, not the sum of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.registry import CheckError, Outcome, get_kind
from labctl.exercises.model import CheckSpec
from labctl.exercises.results import CheckResult

INTERVAL = 0.5


@dataclass
class Clock:
    """Injectable time, so unit tests poll without sleeping."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def evaluate_once(check: CheckSpec, ctx: CheckContext, step_id: str) -> tuple[Outcome, bool]:
    """(outcome, crashed): a CheckError is an ordinary failure; any other exception is a bug → error."""
    ctx.step_id = step_id
    ctx.check_id = check.id
    try:
        return get_kind(check.kind).fn(ctx, check.args), False
    except CheckError as e:
        return Outcome(False, str(e)), False
    except Exception as e:
        return Outcome(False, f"check crashed: {type(e).__name__}: {e}"), True


def poll(checks: Sequence[tuple[str, CheckSpec]], ctx: CheckContext, *, max_wait: float | None = None,
         clock: Clock | None = None, interval: float = INTERVAL,
         on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Poll (step id, check) pairs; budgets are each check's `within`, capped at `max_wait` if given."""
    clock = clock or Clock()
    start = clock.now()
    budget = {c.id: c.within if max_wait is None else min(c.within, max_wait) for _, c in checks}
    pending = list(checks)
    done: dict[str, CheckResult] = {}
    while pending:
        ctx.new_round()
        still: list[tuple[str, CheckSpec]] = []
        for step_id, c in pending:
            outcome, crashed = evaluate_once(c, ctx, step_id)
            elapsed = clock.now() - start
            if outcome.ok or crashed or elapsed >= budget[c.id]:
                result = to_result(step_id, c, outcome, "error" if crashed else None, elapsed)
                done[c.id] = result
                if on_result is not None:
                    on_result(result)
            else:
                still.append((step_id, c))
        pending = still
        if pending:
            left = min(budget[c.id] for _, c in pending) - (clock.now() - start)
            clock.sleep(max(0.0, min(interval, left)))
    return [done[c.id] for _, c in checks]


def to_result(step_id: str, c: CheckSpec, outcome: Outcome, status: str | None, elapsed: float) -> CheckResult:
    ok = outcome.ok and status is None
    return CheckResult(
        id=c.id, step=step_id, title=c.title, kind=c.kind, points=c.points,
        status="passed" if ok else ("error" if status == "error" else "failed"),
        detail=outcome.message, message="" if ok else c.failure_message, hint="" if ok else c.hint,
        observed=outcome.observed, duration=round(elapsed, 3),
    )
