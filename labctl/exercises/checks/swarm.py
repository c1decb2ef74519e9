"""Swarm state as each engine reports it (`docker info`: Swarm.LocalNodeState)."""

from __future__ import annotations

from typing import Literal

from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.registry import CheckError, Outcome, Params, check

LocalState = Literal["inactive", "pending", "active", "error", "locked"]


class SwarmStateParams(Params):
    node: str = "all"  # a node name, or all / managers / workers
    state: LocalState = "active"
    control_available: bool | None = None  # also require (or forbid) the control plane on those nodes


@check("swarm.state", SwarmStateParams)
def swarm_state(ctx: CheckContext, p: SwarmStateParams) -> Outcome:
    """Every selected node's engine is in the given swarm state."""
    observed: dict[str, str] = {}
    wrong: list[str] = []
    for node in ctx.lab.select(p.node):
        try:
            swarm = ctx.info(node).get("Swarm") or {}
        except CheckError as e:
            observed[node] = "unreachable"
            wrong.append(str(e))
            continue
        state = str(swarm.get("LocalNodeState") or "inactive")
        observed[node] = state
        if state != p.state:
            wrong.append(f"{node} is {state}")
        elif p.control_available is not None and bool(swarm.get("ControlAvailable")) != p.control_available:
            wrong.append(f"{node} {'lacks' if p.control_available else 'has'} the control plane")
    if wrong:
        return Outcome(False, f"expected swarm state {p.state}: " + "; ".join(wrong), observed)
    return Outcome(True, f"swarm {p.state} on {', '.join(observed)}", observed)
