"""`labctl`: bring labs up and down, look at them, break them, and step into their nodes.

Errors a user can cause are one red line and a non-zero exit; set LABCTL_DEBUG=1 to see tracebacks of
unexpected failures.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from labctl import registry
from labctl.errors import LabError, UsageError
from labctl.providers.base import Provider
from labctl.registry import LabRecord
from labctl.spec import LabSpec, load_spec, parse_spec

app = typer.Typer(
    name="labctl",
    help="Classroom Docker Swarm labs in one command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

LabOpt = Annotated[str | None, typer.Option("--lab", "-l", help="The lab to act on (default: the only lab).")]
FileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="A lab.yaml; its name picks the lab.")]
NodeArg = Annotated[str, typer.Argument(help="Node name, e.g. manager1.")]
LabArg = Annotated[str | None, typer.Argument(help="The lab (same as --lab).", show_default=False)]

T = TypeVar("T")


def provider_for(record: LabRecord) -> Provider:
    kind = record.spec.provider
    if kind == "netns":
        from labctl.providers.netns import NetnsProvider

        return NetnsProvider(record)
    if kind == "vagrant":
        from labctl.providers.vagrant import VagrantProvider

        return VagrantProvider(record)
    if kind == "ssh":
        from labctl.providers.sshhost import SshProvider

        return SshProvider(record)
    raise UsageError(f"provider {kind!r} is not available in this version of labctl (use provider: netns)")


def _one_lab(positional: str | None, option: str | None) -> str | None:
    """`labctl down mylab` and `labctl down --lab mylab` mean the same; both naming different labs is an error."""
    if positional is not None and option is not None and positional != option:
        raise UsageError(f"two labs named: {positional!r} and --lab {option!r}")
    return positional if positional is not None else option


def _lab_from(lab: str | None, file: Path | None) -> LabRecord:
    spec_name = load_spec(file).name if file is not None else None
    return registry.load(registry.resolve(lab, spec_name))


@contextmanager
def _steps(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the current step, and a dim line per finished step (quiet when not a terminal)."""
    if not out.is_terminal:
        yield lambda _msg: None
        return
    with out.status(title) as status:

        def progress(msg: str) -> None:
            out.print(f"  [dim]✓ {msg}[/dim]")
            status.update(f"{title} — {msg}")

        yield progress


# --------------------------------------------------------------------------------------------- lifecycle
ViaOpt = Annotated[
    str | None,
    typer.Option("--via", help="How agents reach the nodes: 'ssh' pushes them over SSH (netns: each node runs sshd)."),
]


@app.command()
def up(file: FileOpt = None, via: ViaOpt = None) -> None:
    """Build the lab from lab.yaml (default: 3 managers, 2 workers) and start its agents."""
    from labctl import lifecycle

    spec = load_spec(file)
    if via is not None:
        spec = with_via(spec, via)
    with _steps(f"Bringing up lab {spec.name}") as progress:
        record, created = lifecycle.up(spec, progress)
    if not created:
        out.print(f"lab [bold]{record.name}[/bold] is already up ({len(record.spec.nodes)} nodes); nothing to do")
        return
    out.print(f"lab [bold]{record.name}[/bold] is up on {record.spec.subnet} (host {record.spec.host_address})")
    _print_status(record, provider_for(record))


@app.command()
def down(name: LabArg = None, lab: LabOpt = None, file: FileOpt = None) -> None:
    """Remove the lab and everything it created: namespaces, links, rules, processes and state."""
    from labctl import lifecycle

    lab = _one_lab(name, lab)
    spec_name = load_spec(file).name if file is not None else None
    if lab is None and spec_name is None and not registry.names():
        out.print("no lab exists; nothing to do")
        return
    name = registry.resolve(lab, spec_name)
    with _steps(f"Tearing down lab {name}") as progress:
        problems = lifecycle.down(name, progress)
    if problems:
        raise LabError(f"lab {name} removed with problems: {'; '.join(problems)}")
    out.print(f"lab [bold]{name}[/bold] removed")


@app.command()
def status(
    name: LabArg = None,
    lab: LabOpt = None,
    file: FileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each node: role, IP, agent state, swarm state and leader."""
    record = _lab_from(_one_lab(name, lab), file)
    provider = provider_for(record)
    if as_json:
        nodes = provider.status()
        doc: dict[str, Any] = {
            "lab": record.name,
            "provider": record.spec.provider,
            "subnet": str(record.spec.subnet),
            "nodes": [n.to_json() for n in nodes],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    _print_status(record, provider)


def _print_status(record: LabRecord, provider: Provider) -> None:
    table = Table(title=f"lab {record.name} ({record.spec.provider}, {record.spec.subnet})", title_justify="left")
    for col in ("NODE", "ROLE", "IP", "AGENT", "SWARM", "LEADER"):
        table.add_column(col)
    colors = {"running": "green", "starting": "yellow", "stopped": "red", "halted": "red"}
    for n in provider.status():
        leader = "*" if n.leader else ""
        table.add_row(n.name, n.role, n.ip, f"[{colors.get(n.state, 'white')}]{n.state}[/]", n.swarm, leader)
    out.print(table)


# ------------------------------------------------------------------------------------------- node access
@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    node: NodeArg,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (default: a shell).")] = None,
    lab: LabOpt = None,
    file: FileOpt = None,
) -> None:
    """Run a command inside NODE, with DOCKER_HOST set to its agent: `labctl exec manager1 -- docker info`."""
    record = _lab_from(lab, file)
    argv = provider_for(record).exec_argv(node, command or [])
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        raise LabError(f"cannot run {argv[0]}: {e.strerror}") from None


@app.command()
def env(node: NodeArg, lab: LabOpt = None, file: FileOpt = None) -> None:
    """Print the shell line that points the docker CLI at NODE: `eval $(labctl env manager1)`."""
    record = _lab_from(lab, file)
    sys.stdout.write(f"export DOCKER_HOST={provider_for(record).docker_host(node)}\n")
    sys.stdout.write(f"# run: eval $(labctl env {node}{'' if lab is None else ' --lab ' + lab})\n")


@app.command("ssh")
def ssh_(node: NodeArg, lab: LabOpt = None, file: FileOpt = None) -> None:
    """Log into NODE over SSH with the lab's key and known_hosts (vagrant, ssh, and netns --via ssh labs)."""
    from labctl.providers.remote import ssh_argv

    argv = ssh_argv(provider_for(_lab_from(lab, file)), node)
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        raise LabError(f"cannot run {argv[0]}: {e.strerror}") from None


@app.command()
def render(
    file: FileOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write (default: stdout).")] = None,
) -> None:
    """Write the Vagrantfile a vagrant lab would use, for inspection (nothing is created)."""
    from labctl import remotenet, vagrantfile

    spec = load_spec(file)
    if spec.provider != "vagrant":
        raise UsageError(f"lab {spec.name!r} uses provider {spec.provider}; only provider: vagrant has a Vagrantfile")
    text = vagrantfile.render(spec.with_subnet(remotenet.pick(spec)))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        out.print(f"wrote {output}")


# ------------------------------------------------------------------------------------------------ faults
@app.command()
def halt(node: NodeArg, lab: LabOpt = None, file: FileOpt = None) -> None:
    """Power NODE off: its agent and tasks stop, its links go down, its disk is kept."""
    provider_for(_lab_from(lab, file)).halt(node)
    out.print(f"{node} halted")


@app.command()
def start(node: NodeArg, lab: LabOpt = None, file: FileOpt = None) -> None:
    """Power NODE on again (or restart its agent after a kill)."""
    provider_for(_lab_from(lab, file)).start(node)
    out.print(f"{node} started")


@app.command()
def kill(node: NodeArg, lab: LabOpt = None, file: FileOpt = None) -> None:
    """SIGKILL the agent on NODE, leaving its tasks as a crash would."""
    provider_for(_lab_from(lab, file)).kill(node)
    out.print(f"agent on {node} killed")


@app.command()
def partition(
    groups: Annotated[list[str], typer.Argument(help="Two or more groups, nodes comma-separated: A,B C")],
    lab: LabOpt = None,
    file: FileOpt = None,
) -> None:
    """Cut the network between groups of nodes: `labctl partition manager1 manager2,manager3`."""
    parsed = [[n for n in g.split(",") if n] for g in groups]
    if any(not g for g in parsed):
        raise UsageError("empty group in partition; write groups as A,B C")
    provider_for(_lab_from(lab, file)).partition(parsed)
    out.print(" | ".join(",".join(g) for g in parsed) + " partitioned")


@app.command()
def heal(lab: LabOpt = None, file: FileOpt = None) -> None:
    """Remove every partition."""
    provider_for(_lab_from(lab, file)).heal()
    out.print("network healed")


# ------------------------------------------------------------------------------------------------ doctor
@app.command()
def doctor() -> None:
    """Check this host can run labs: privileges, kernel features, binaries."""
    from labctl.doctor import run_checks

    checks = run_checks()
    table = Table(title="labctl doctor", title_justify="left")
    for col in ("CHECK", "", "DETAIL"):
        table.add_column(col)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[yellow]warn[/]" if not c.required else "[red]missing[/]")
        table.add_row(c.name, mark, c.detail if c.ok else f"{c.detail} — {c.fix}")
    out.print(table)
    if any(c.required and not c.ok for c in checks):
        raise LabError("this host cannot run netns labs yet; fix the lines marked missing")


# --------------------------------------------------------------------------------------------- exercises
ExerciseArg = Annotated[str, typer.Argument(help="An exercise id (labs/<id>.yaml) or a path to one.")]


@app.command("run")
def run_exercise(
    exercise: ExerciseArg,
    lab: LabOpt = None,
    auto: Annotated[bool, typer.Option("--auto", help="Apply each step's solution and verify it (CI, demos).")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Forget saved progress and start from step 1.")] = False,
    teardown: Annotated[bool, typer.Option("--down", help="Remove the lab afterwards (with --auto).")] = False,
) -> None:
    """Run an exercise: guided (show a step, you work, it checks) or --auto; brings its lab up if needed."""
    from labctl.exercises import labs as exlabs
    from labctl.exercises import progress as store
    from labctl.exercises.model import find_exercise, load_exercise

    ex = load_exercise(find_exercise(exercise))
    with _steps(f"Preparing lab for {ex.id}") as progress:
        record, created = exlabs.ensure_lab(ex, lab, progress)
    if created:
        out.print(f"lab [bold]{record.name}[/bold] is up on {record.spec.subnet}")
    if restart or auto:
        store.reset(record.name, ex.id)
    try:
        passed = _run_auto(ex, record) if auto else _run_guided(ex, record)
    finally:
        if teardown and auto:
            from labctl import lifecycle

            lifecycle.down(record.name)
            out.print(f"lab [bold]{record.name}[/bold] removed")
    if not passed:
        raise typer.Exit(1)


def _session(ex: Any, record: LabRecord) -> Any:
    from labctl.exercises.session import Session
    from labctl.exercises.target import LabTarget

    return Session(ex, LabTarget(provider_for(record)), log=lambda msg: out.print(f"  [dim]{msg}[/dim]"))


def _run_auto(ex: Any, record: LabRecord) -> bool:
    from labctl.exercises.reports.summary import check_line, lab_table
    from labctl.exercises.runner import run_auto

    def shown(step: Any, results: list[Any]) -> None:
        out.print(f"[bold]{step.title}[/bold]")
        for r in results:
            out.print("  " + check_line(r).replace("\n", "\n  "))

    result = run_auto(_session(ex, record), record.name, on_step=shown)
    out.print(lab_table(result))
    if result.error:
        err.print(f"[red]error:[/red] {result.error}")
    return result.passed


def _run_guided(ex: Any, record: LabRecord) -> bool:
    from labctl.exercises import progress as store
    from labctl.exercises.console import RichGuidedUI
    from labctl.exercises.runner import run_guided

    prog = store.load(record.name, ex.id)
    if prog.step:
        out.print(f"resuming {ex.id} at step {prog.step + 1}/{len(ex.steps)} (--restart starts over)")
    if prog.step >= len(ex.steps):
        out.print("this exercise is finished; 'labctl grade' scores it, --restart starts over")
        return True
    result = run_guided(_session(ex, record), prog, RichGuidedUI(out, ex, record.name))
    if result is None:
        out.print(f"progress saved; 'labctl run {ex.id} --lab {record.name}' resumes")
        return True
    return result.passed


@app.command()
def grade(
    exercise: ExerciseArg,
    labs: Annotated[list[str] | None, typer.Option("--lab", "-l", help="Lab(s) to grade; repeat for a class.")] = None,
    pattern: Annotated[str | None, typer.Option("--class", help="Grade every lab whose name matches this glob.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where reports are written.")] = Path("grades"),
    threshold: Annotated[float | None, typer.Option(help="Percent needed to pass (default: the exercise's).")] = None,
    max_wait: Annotated[float | None, typer.Option(help="Cap each check's wait budget (seconds).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of the summary.")] = False,
) -> None:
    """Score an exercise on one lab or a class (in parallel): JSON, JUnit, Classroom reports; exit 1 below the threshold."""
    from labctl.exercises import labs as exlabs
    from labctl.exercises import progress as store
    from labctl.exercises.grader import grade as grade_lab
    from labctl.exercises.grader import grade_many
    from labctl.exercises.model import find_exercise, load_exercise
    from labctl.exercises.reports import classroom, jsonreport, junit
    from labctl.exercises.reports.summary import print_results
    from labctl.exercises.results import LabResult
    from labctl.exercises.session import Session, now_iso
    from labctl.exercises.target import LabTarget

    path = find_exercise(exercise)
    ex = load_exercise(path)
    names = exlabs.labs_to_grade(ex, labs or [], pattern)

    def job(name: str) -> LabResult:
        try:
            record = registry.load(name)
            exlabs.check_fits(ex, record)
            target = LabTarget(provider_for(record))
            try:
                return grade_lab(Session(ex, target), name, store.load(name, ex.id), threshold, max_wait)
            finally:
                target.close()
        except LabError as e:
            return LabResult(ex.id, ex.title, name, ex.passing if threshold is None else threshold,
                             started=now_iso(), error=str(e))

    results = grade_many([functools.partial(job, n) for n in names])
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        (out_dir / f"{r.lab}.json").write_text(jsonreport.render([r]))
        (out_dir / f"{r.lab}.junit.xml").write_text(junit.render([r], f"{ex.id} {r.lab}"))
        (out_dir / f"{r.lab}.classroom.b64").write_text(classroom.encode(r, str(path)) + "\n")
    if len(results) > 1:
        (out_dir / "class.json").write_text(jsonreport.render(results))
        (out_dir / "class.junit.xml").write_text(junit.render(results, f"{ex.id} class"))
    elif results:
        classroom.publish_github_output(classroom.encode(results[0], str(path)))
    if as_json:
        sys.stdout.write(jsonreport.render(results))
    else:
        print_results(out, results)
        out.print(f"[dim]reports in {out_dir}/[/dim]")
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@app.command("validate")
def validate_exercises(
    files: Annotated[list[str], typer.Argument(help="Exercise ids or files.")],
) -> None:
    """Check exercise files against the format (docs/labs.md) without touching any lab."""
    from labctl.exercises.model import find_exercise, load_exercise

    for name in files:
        ex = load_exercise(find_exercise(name))
        out.print(f"[green]ok[/green] {ex.id}: {len(ex.steps)} steps, {len(ex.checks)} checks, {ex.max_score} points")


def with_via(spec: LabSpec, via: str) -> LabSpec:
    """The spec with `via` set from the command line (validated like the file's own field)."""
    data = spec.model_dump(mode="json")
    data["via"] = via
    data.pop("managers", None)
    data.pop("workers", None)
    return parse_spec(data, "--via")


def main() -> None:
    """Console entry: typer reports usage errors itself (exit 2); ours become one red line."""
    try:
        app()
    except LabError as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as e:  # anything unexpected: one line, never a traceback (unless asked for)
        if os.environ.get("LABCTL_DEBUG"):
            raise
        err.print(f"[red]error:[/red] unexpected failure: {type(e).__name__}: {e} (LABCTL_DEBUG=1 shows details)")
        sys.exit(1)


if __name__ == "__main__":
    main()
