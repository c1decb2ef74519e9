"""The guided mode's terminal: a step's explanation as markdown, a prompt, results with hints."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

from labctl.exercises.model import Exercise, Step
from labctl.exercises.reports.summary import check_line, lab_table
from labctl.exercises.results import CheckResult, LabResult
from labctl.exercises.runner import Choice

KEYS: dict[str, Choice] = {"": "check", "c": "check", "h": "hint", "s": "solution", "n": "skip", "q": "quit"}


class RichGuidedUI:
    def __init__(self, console: Console, exercise: Exercise, lab: str,
                 read: Callable[[str], str] = input) -> None:
        self.console = console
        self.exercise = exercise
        self.lab = lab
        self.read = read
        self.last_failed: list[CheckResult] = []

    def show_step(self, step: Step, index: int, total: int) -> None:
        self.last_failed = []
        body = Markdown(step.explain or step.title)
        self.console.print(Panel(body, title=f"[bold]{self.exercise.title}[/] — step {index + 1}/{total}: {step.title}",
                                 title_align="left"))
        self.console.print(f"[dim]Work in another terminal: labctl exec NODE --lab {self.lab} (or labctl ssh NODE).[/dim]")

    def show_note(self, text: str) -> None:
        self.console.print(text)

    def ask(self) -> Choice:
        while True:
            try:
                answer = self.read("[Enter] check  [h]int  [s]olution  [n]ext (skip)  [q]uit > ").strip().lower()
            except EOFError:
                return "quit"
            choice = KEYS.get(answer[:1])
            if choice == "hint":
                self._hints()
                continue
            if choice is not None:
                return choice
            self.console.print("[yellow]press Enter to check, or h, s, n, q[/yellow]")

    def _hints(self) -> None:
        if not self.last_failed:
            self.console.print("[dim]Check first (Enter); hints are shown for the checks that fail.[/dim]")
        for r in self.last_failed:
            self.console.print(f"[yellow]hint[/yellow] ({r.title}): {r.hint or 'no hint for this one'}")

    def show_results(self, step: Step, results: list[CheckResult]) -> None:
        self.console.print(f"[dim]checking {len(results)} check(s)…[/dim]")
        for r in results:
            self.console.print(check_line(r))
        self.last_failed = [r for r in results if not r.passed]
        if not self.last_failed:
            self.console.print("[green]step done — progress saved[/green]\n")

    def show_hints(self, step: Step, results: list[CheckResult]) -> None:
        self.console.print("[yellow]Not yet: fix what is marked ✗ and press Enter to check again.[/yellow]")

    def show_solution(self, step: Step) -> None:
        if not step.run:
            self.console.print("[dim]This step has no commands to show.[/dim]")
        for r in step.run:
            self.console.print(f"  [cyan]labctl exec {r.node} --lab {self.lab} -- {r.cmd}[/cyan]")

    def show_done(self, result: LabResult) -> None:
        self.console.print(lab_table(result))
