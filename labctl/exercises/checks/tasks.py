"""Tasks as `docker service ps` shows them: how many, where, in which state, and what replaced what."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Literal

from labctl.exercises.checks.context import CheckContext, running
from labctl.exercises.checks.nodes import count_outcome
from labctl.exercises.checks.registry import Outcome, Params, check

TaskState = Literal["new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
                    "complete", "shutdown", "failed", "rejected", "remove", "orphaned"]


def in_state(task: dict[str, Any], state: str) -> bool:
    """`running` means running and meant to run (not a task on its way out)."""
    return running(task) if state == "running" else task.get("Status", {}).get("State") == state


class CountParams(Params):
    service: str
    state: TaskState = "running"
    node: str | None = None  # only tasks on this node (or all / managers / workers)
    count: int | None = None
    min: int | None = None
    max: int | None = None


@check("tasks.count", CountParams)
def tasks_count(ctx: CheckContext, p: CountParams) -> Outcome:
    """How many of the service's tasks are in a state, optionally on given node(s)."""
    where = set(ctx.lab.select(p.node)) if p.node else None
    picked = [t for t in ctx.tasks(p.service) if in_state(t, p.state)
              and (where is None or ctx.node_name(str(t.get("NodeID", ""))) in where)]
    per_node = Counter(ctx.node_name(str(t.get("NodeID", ""))) for t in picked)
    on = f" on {p.node}" if p.node else ""
    return count_outcome(len(picked), p.count, p.min, p.max, f"{p.state} tasks of {p.service}{on}", dict(per_node))


class PerNodeParams(Params):
    service: str
    nodes: str = "all"  # which nodes each must satisfy the bounds
    state: TaskState = "running"
    count: int | None = None
    min: int | None = None
    max: int | None = None


@check("tasks.per_node", PerNodeParams)
def tasks_per_node(ctx: CheckContext, p: PerNodeParams) -> Outcome:
    """Each selected node runs count (or min..max) of the service's tasks (spread, global, drained)."""
    per_node = Counter(ctx.node_name(str(t.get("NodeID", ""))) for t in ctx.tasks(p.service) if in_state(t, p.state))
    observed = {n: per_node.get(n, 0) for n in ctx.lab.select(p.nodes)}
    for node, n in observed.items():
        out = count_outcome(n, p.count, p.min, p.max, f"{p.state} tasks of {p.service} on {node}", observed)
        if not out.ok:
            return out
    return Outcome(True, f"{p.state} tasks of {p.service} per node: "
                   + ", ".join(f"{k}={v}" for k, v in observed.items()), observed)


class ReplacedParams(Params):
    service: str
    min: int = 1  # at least this many slots (or nodes, for global services) saw a task replaced
    reason: str | None = None  # text the replaced task's status message or error contains ("non-zero exit")
    node: str | None = None  # the replaced task ran on this node


@check("tasks.replaced", ReplacedParams)
def tasks_replaced(ctx: CheckContext, p: ReplacedParams) -> Outcome:
    """The service's history shows replaced tasks: an old task shut down/failed and a newer one running
    in the same slot (`docker service ps` lines starting with `\\_`)."""
    slots: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for t in ctx.tasks(p.service):
        slots[t.get("Slot") or t.get("NodeID")].append(t)
    where = set(ctx.lab.select(p.node)) if p.node else None
    replaced: list[str] = []
    for slot, tasks in slots.items():
        if not any(running(t) for t in tasks):
            continue
        old = [t for t in tasks if t.get("DesiredState") != "running"
               and (where is None or ctx.node_name(str(t.get("NodeID", ""))) in where)]
        if p.reason is not None:
            text = p.reason.lower()
            old = [t for t in old if text in (str(t.get("Status", {}).get("Err", "")) + " "
                                              + str(t.get("Status", {}).get("Message", ""))).lower()]
        if old:
            replaced.append(str(slot))
    return count_outcome(len(replaced), None, p.min, None, f"replaced task slot(s) of {p.service}", replaced)
