"""A command's output: run in a service's task container (Docker exec API) or on a node's shell."""

from __future__ import annotations

import re

from pydantic import model_validator

from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.registry import Outcome, Params, check
from labctl.exercises.checks.taskexec import exec_in_task
from labctl.exercises.durations import Duration


class CommandParams(Params):
    command: str  # a shell command (`sh -c`)
    service: str | None = None  # run it inside a running task of this service…
    node: str | None = None  # …or on this node, as a student's shell there would (DOCKER_HOST set)
    contains: str | None = None
    regex: str | None = None  # re.search, multiline
    equals: str | None = None  # whole output, surrounding whitespace ignored
    exit_code: int | None = 0
    timeout: Duration = 20.0

    @model_validator(mode="after")
    def _where(self) -> CommandParams:
        if self.node is not None and self.service is not None:
            raise ValueError("give either service (run in a task) or node (run on the node), not both")
        if self.node is None and self.service is None:
            raise ValueError("give service (run in a task) or node (run on the node)")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise ValueError(f"regex {self.regex!r} is not valid: {e}") from None
        return self


@check("command.output", CommandParams)
def command_output(ctx: CheckContext, p: CommandParams) -> Outcome:
    """Run a command and match its exit code and output (contains / regex / equals)."""
    if p.service is not None:
        where, rc, out = exec_in_task(ctx, p.service, ["sh", "-c", p.command])
        where = f"{p.service} on {where}"
    else:
        assert p.node is not None
        rc, out = ctx.target.node_exec(p.node, p.command, p.timeout)
        where = p.node
    short = out.strip()[-300:]
    observed = {"exit": rc, "output": short}
    if p.exit_code is not None and rc != p.exit_code:
        return Outcome(False, f"`{p.command}` in {where} exited {rc}: {short}", observed)
    if p.contains is not None and p.contains not in out:
        return Outcome(False, f"`{p.command}` in {where} printed no {p.contains!r}: {short}", observed)
    if p.regex is not None and not re.search(p.regex, out, re.MULTILINE):
        return Outcome(False, f"`{p.command}` in {where} does not match /{p.regex}/: {short}", observed)
    if p.equals is not None and out.strip() != p.equals.strip():
        return Outcome(False, f"`{p.command}` in {where} printed {short!r}, expected {p.equals.strip()!r}", observed)
    return Outcome(True, f"`{p.command}` in {where} gave the expected output", observed)
