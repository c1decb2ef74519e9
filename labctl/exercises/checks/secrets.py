"""Secrets: created in the swarm, and readable by the service's tasks at /run/secrets/<name>."""

from __future__ import annotations

import hashlib

from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.registry import Outcome, Params, check
from labctl.exercises.checks.taskexec import exec_in_task


class ExistsParams(Params):
    secret: str
    absent: bool = False


@check("secret.exists", ExistsParams)
def secret_exists(ctx: CheckContext, p: ExistsParams) -> Outcome:
    """The secret exists in the swarm (or, with absent: true, does not)."""
    names = sorted(str(s.get("Spec", {}).get("Name")) for s in ctx.secrets())
    found = p.secret in names
    if found == p.absent:
        return Outcome(False, f"secret {p.secret} {'exists' if found else 'does not exist'}", names)
    return Outcome(True, f"secret {p.secret} {'exists' if found else 'is gone'}", names)


class ReadableParams(Params):
    service: str
    secret: str
    target: str | None = None  # path in the container (default /run/secrets/<secret>)
    contains: str | None = None  # the content must contain this (never shown in reports)
    sha256: str | None = None  # or hash to this (hex)
    node: str | None = None  # look in the task on this node


@check("secret.readable", ReadableParams)
def secret_readable(ctx: CheckContext, p: ReadableParams) -> Outcome:
    """A running task of the service can read the secret file (content checked without revealing it)."""
    path = p.target or f"/run/secrets/{p.secret}"
    node, rc, out = exec_in_task(ctx, p.service, ["cat", path], p.node)
    if rc != 0:
        return Outcome(False, f"{path} is not readable in {p.service} on {node} (exit {rc})", {"node": node, "exit": rc})
    observed = {"node": node, "bytes": len(out.encode())}
    if p.contains is not None and p.contains not in out:
        return Outcome(False, f"{path} in {p.service} does not hold the expected value", observed)
    if p.sha256 is not None and hashlib.sha256(out.encode()).hexdigest() != p.sha256.lower():
        return Outcome(False, f"{path} in {p.service} does not hold the expected value", observed)
    return Outcome(True, f"{path} is readable in {p.service} on {node}", observed)
