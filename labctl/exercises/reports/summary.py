"""The rich terminal summary: a table of checks per lab, and one line per lab for a class."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from labctl.exercises.results import CheckResult, LabResult

MARK = {"passed": "[green]✓[/]", "failed": "[red]✗[/]", "error": "[red]![/]", "skipped": "[yellow]-[/]"}


def check_line(c: CheckResult) -> str:
    text = f"{MARK[c.status]} {c.title} [dim]({c.score}/{c.points})[/dim]"
    if not c.passed:
        text += f"\n    [red]{c.message}[/red]\n    [dim]{c.detail}[/dim]"
        if c.hint:
            text += f"\n    [yellow]hint:[/yellow] {c.hint}"
    return text


def lab_table(r: LabResult) -> Table:
    verdict = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
    table = Table(title=f"{r.title} — lab {r.lab}: {r.score}/{r.max_score} ({r.percent:.0f}%, need {r.threshold:g}%) {verdict}",
                  title_justify="left", show_lines=False)
    for col in ("", "STEP", "CHECK", "POINTS", "DETAIL"):
        table.add_column(col, overflow="fold")
    for c in r.checks:
        detail = c.detail if c.passed else f"[red]{c.message}[/red]\n{c.detail}" + (f"\n[yellow]hint:[/] {c.hint}" if c.hint else "")
        table.add_row(MARK[c.status], c.step, c.title, f"{c.score}/{c.points}", detail)
    return table


def print_results(console: Console, results: Sequence[LabResult]) -> None:
    for r in results:
        if r.error and not r.checks:
            console.print(f"[red]✗ lab {r.lab}: {r.error}[/red]")
        else:
            console.print(lab_table(r))
            if r.error:
                console.print(f"[red]{r.error}[/red]")
    if len(results) > 1:
        table = Table(title="class", title_justify="left")
        for col in ("LAB", "SCORE", "%", "RESULT"):
            table.add_column(col)
        for r in results:
            table.add_row(r.lab, f"{r.score}/{r.max_score}", f"{r.percent:.0f}", "[green]pass[/]" if r.passed else "[red]fail[/]")
        console.print(table)
