"""`labctl grade`: the checks only (no faults, no `run`), scored; many labs (a class) in parallel.

Checks marked `at: end` are read now; `at: step` checks (states a later step undoes, e.g. a drained node
that is reactivated) take the result the run recorded, and fail if the lab was never run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from labctl.exercises.progress import Progress
from labctl.exercises.results import CheckResult, LabResult
from labctl.exercises.session import Session, elapsed_since

MAX_PARALLEL = 16


def grade(session: Session, lab: str, prog: Progress | None = None, threshold: float | None = None,
          max_wait: float | None = None) -> LabResult:
    t0 = time.monotonic()
    ex = session.exercise
    if prog is not None:
        session.memory = prog.memory
    result = session.new_result(lab, threshold)
    now = [(s.id, c) for s in ex.steps for c in s.checks if c.at == "end"]
    by_id: dict[str, CheckResult] = {r.id: r for r in session.check(now, max_wait=max_wait)}
    for step in ex.steps:
        for c in step.checks:
            if c.at == "end":
                continue
            recorded = prog.result(c.id) if prog is not None else None
            if recorded is None:
                recorded = CheckResult(c.id, step.id, c.title, c.kind, c.points, "failed",
                                       "not verified during a run of the lab (labctl run)", c.failure_message, c.hint)
            by_id[c.id] = recorded
    result.checks = [by_id[c.id] for c in ex.checks]
    result.duration = elapsed_since(t0)
    return result


def grade_many(jobs: Sequence[Callable[[], LabResult]], parallel: int = MAX_PARALLEL) -> list[LabResult]:
    """Run grading jobs concurrently (they wait on the network, not the CPU); results in job order."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs))), thread_name_prefix="grade") as pool:
        return list(pool.map(lambda job: job(), jobs))
