"""`labctl run`: `--auto` applies each step's faults and `run` commands and verifies its checks (CI and
demos); guided mode shows a step, applies its faults, waits while the student works in `labctl exec` /
`labctl ssh` shells, verifies on request, shows hints on failure and moves on. Progress is saved after
every change, so a session resumes where it stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

from labctl.exercises import progress as store
from labctl.exercises.model import Step
from labctl.exercises.progress import Progress
from labctl.exercises.results import CheckResult, LabResult
from labctl.exercises.session import Session, StepActionFailed, elapsed_since, skipped

Choice = Literal["check", "hint", "solution", "skip", "quit"]


class GuidedUI(Protocol):
    def show_step(self, step: Step, index: int, total: int) -> None: ...
    def show_note(self, text: str) -> None: ...
    def ask(self) -> Choice: ...
    def show_results(self, step: Step, results: list[CheckResult]) -> None: ...
    def show_hints(self, step: Step, results: list[CheckResult]) -> None: ...
    def show_solution(self, step: Step) -> None: ...
    def show_done(self, result: LabResult) -> None: ...


Saver = Callable[[Progress], None]


def run_auto(session: Session, lab: str, threshold: float | None = None,
             on_step: Callable[[Step, list[CheckResult]], None] | None = None,
             saver: Saver = store.save) -> LabResult:
    """Every step in order: watchers, faults, `run` commands, checks; stops at the first step that fails."""
    try:
        return _run_auto(session, lab, threshold, on_step, saver)
    finally:
        session.close()


def _run_auto(session: Session, lab: str, threshold: float | None,
              on_step: Callable[[Step, list[CheckResult]], None] | None, saver: Saver) -> LabResult:
    t0 = time.monotonic()
    ex = session.exercise
    prog = Progress(exercise=ex.id, lab=lab, memory=session.memory)
    result = session.new_result(lab, threshold)
    failed_at: int | None = None
    for i, step in enumerate(ex.steps):
        if failed_at is not None:
            result.checks += [skipped(step.id, c, f"not run: step {ex.steps[failed_at].id} failed") for c in step.checks]
            continue
        session.record_baseline(step)
        session.begin_step(step)
        try:
            session.apply_faults(step)
            prog.faulted.append(step.id)
            session.apply_runs(step)
        except StepActionFailed as e:
            session.end_step(step)
            result.error = str(e)
            result.checks += [skipped(step.id, c, str(e)) for c in step.checks]
            failed_at = i
            continue
        results = session.check([(step.id, c) for c in step.checks])
        session.end_step(step)
        for r in results:
            prog.record(r)
        result.checks += results
        prog.step = i + 1
        saver(prog)
        if on_step is not None:
            on_step(step, results)
        if not all(r.passed for r in results):
            failed_at = i
    if failed_at is not None:
        prog.step = failed_at
    saver(prog)
    result.duration = elapsed_since(t0)
    return result


def run_guided(session: Session, prog: Progress, ui: GuidedUI, threshold: float | None = None,
               saver: Saver = store.save) -> LabResult | None:
    """The guided loop; returns the result at the end, None when the student quits (progress kept)."""
    try:
        return _run_guided(session, prog, ui, threshold, saver)
    finally:
        session.close()


def _run_guided(session: Session, prog: Progress, ui: GuidedUI, threshold: float | None, saver: Saver) -> LabResult | None:
    t0 = time.monotonic()
    ex = session.exercise
    session.memory = prog.memory
    while prog.step < len(ex.steps):
        step = ex.steps[prog.step]
        ui.show_step(step, prog.step, len(ex.steps))
        if step.id not in prog.faulted:
            session.record_baseline(step)
            session.begin_step(step)
            try:
                session.apply_faults(step)
            except StepActionFailed as e:
                ui.show_note(f"[red]{e}[/red] — ask your teacher; progress is saved")
                saver(prog)
                return None
            prog.faulted.append(step.id)
            saver(prog)
        else:
            session.begin_step(step)  # resumed: the watchers cover this attempt
        while True:
            choice = ui.ask()
            if choice == "quit":
                saver(prog)
                return None
            if choice == "solution":
                ui.show_solution(step)
                continue
            if choice == "skip":
                for c in step.checks:
                    prog.record(skipped(step.id, c, "skipped by the student"))
                break
            results = session.check([(step.id, c) for c in step.checks])
            for r in results:
                prog.record(r)
            saver(prog)
            ui.show_results(step, results)
            if all(r.passed for r in results):
                break
            ui.show_hints(step, results)
        session.end_step(step)
        prog.step += 1
        saver(prog)
    result = session.new_result(prog.lab, threshold)
    for step in ex.steps:
        for c in step.checks:
            result.checks.append(prog.result(c.id) or skipped(step.id, c, "not verified"))
    result.duration = elapsed_since(t0)
    ui.show_done(result)
    return result
