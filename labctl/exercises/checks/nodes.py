"""Swarm nodes as the managers see them (`docker node ls` / `docker node inspect`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from labctl.exercises.checks.context import CheckContext
from labctl.exercises.checks.registry import CheckError, Outcome, Params, check


def _each(ctx: CheckContext, selector: str, what: str, get: Callable[[dict[str, Any]], Any],
          want: Callable[[Any], bool], expected: str) -> Outcome:
    ctx.nodes()  # no manager answering is one failure, not one per node
    observed: dict[str, Any] = {}
    wrong = []
    for name in ctx.lab.select(selector):
        try:
            value = get(ctx.swarm_node(name))
        except CheckError as e:
            observed[name] = None
            wrong.append(str(e))
            continue
        observed[name] = value
        if not want(value):
            wrong.append(f"{name} {what} is {value}")
    if wrong:
        return Outcome(False, f"expected {what} {expected}: " + "; ".join(wrong), observed)
    return Outcome(True, f"{what} {expected} on {', '.join(observed)}", observed)


class RoleParams(Params):
    node: str
    role: Literal["manager", "worker"]


@check("node.role", RoleParams)
def node_role(ctx: CheckContext, p: RoleParams) -> Outcome:
    """The node's role (after promote/demote)."""
    return _each(ctx, p.node, "role", lambda n: n.get("Spec", {}).get("Role"), lambda v: v == p.role, p.role)


class AvailabilityParams(Params):
    node: str
    availability: Literal["active", "pause", "drain"]


@check("node.availability", AvailabilityParams)
def node_availability(ctx: CheckContext, p: AvailabilityParams) -> Outcome:
    """The node's availability (active, pause, drain)."""
    return _each(ctx, p.node, "availability", lambda n: n.get("Spec", {}).get("Availability"),
                 lambda v: v == p.availability, p.availability)


class StatusParams(Params):
    node: str = "all"
    status: Literal["ready", "down", "unknown", "disconnected"] = "ready"


@check("node.status", StatusParams)
def node_status(ctx: CheckContext, p: StatusParams) -> Outcome:
    """The node's status as the managers see it (ready, down, …)."""
    return _each(ctx, p.node, "status", lambda n: n.get("Status", {}).get("State"), lambda v: v == p.status, p.status)


class LabelsParams(Params):
    node: str
    labels: dict[str, str] = {}  # each must be present with this value (others may exist)
    absent: list[str] = []  # label keys that must not be set


@check("node.labels", LabelsParams)
def node_labels(ctx: CheckContext, p: LabelsParams) -> Outcome:
    """The node carries the given labels (and not the absent ones)."""

    def fine(labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in p.labels.items()) and not any(k in labels for k in p.absent)

    expected = ", ".join([f"{k}={v}" for k, v in p.labels.items()] + [f"no {k}" for k in p.absent])
    return _each(ctx, p.node, "labels", lambda n: dict(n.get("Spec", {}).get("Labels") or {}), fine, expected)


def current_leader(ctx: CheckContext) -> str | None:
    for n in ctx.nodes():
        if (n.get("ManagerStatus") or {}).get("Leader"):
            return str(n.get("Description", {}).get("Hostname") or n.get("ID"))
    return None


class LeaderParams(Params):
    node: str  # the node expected to lead


@check("node.leader", LeaderParams)
def node_leader(ctx: CheckContext, p: LeaderParams) -> Outcome:
    """The given node is the swarm's leader."""
    leader = current_leader(ctx)
    if leader == p.node:
        return Outcome(True, f"{p.node} is the leader", leader)
    return Outcome(False, f"the leader is {leader or 'nobody'}, not {p.node}", leader)


class LeaderChangedParams(Params):
    since: str | None = None  # the step whose start is the reference (default: the check's own step)


def leader_key(step_id: str) -> str:
    return f"leader@{step_id}"


@check("node.leader_changed", LeaderChangedParams)
def node_leader_changed(ctx: CheckContext, p: LeaderChangedParams) -> Outcome:
    """A leader is elected and it is not the one that led when the reference step started."""
    step = p.since or ctx.step_id or ""
    if leader_key(step) not in ctx.memory:
        return Outcome(False, f"no leader was recorded when step {step!r} started (run the lab with labctl run)")
    before = ctx.memory[leader_key(step)]
    leader = current_leader(ctx)
    observed = {"before": before, "now": leader}
    if leader is None:
        return Outcome(False, "the swarm has no leader", observed)
    if leader == before:
        return Outcome(False, f"{leader} still leads", observed)
    return Outcome(True, f"the leader changed from {before or 'nobody'} to {leader}", observed)


class CountParams(Params):
    role: Literal["manager", "worker"] | None = None
    status: Literal["ready", "down", "unknown", "disconnected"] | None = None
    availability: Literal["active", "pause", "drain"] | None = None
    reachability: Literal["reachable", "unreachable", "unknown"] | None = None
    count: int | None = None
    min: int | None = None
    max: int | None = None


@check("nodes.count", CountParams)
def nodes_count(ctx: CheckContext, p: CountParams) -> Outcome:
    """How many swarm nodes match role/status/availability/reachability (count, or min/max)."""

    def match(n: dict[str, Any]) -> bool:
        spec, status = n.get("Spec", {}), n.get("Status", {})
        reach = (n.get("ManagerStatus") or {}).get("Reachability")
        return ((p.role is None or spec.get("Role") == p.role)
                and (p.status is None or status.get("State") == p.status)
                and (p.availability is None or spec.get("Availability") == p.availability)
                and (p.reachability is None or reach == p.reachability))

    names = sorted(str(n.get("Description", {}).get("Hostname") or n.get("ID")) for n in ctx.nodes() if match(n))
    return count_outcome(len(names), p.count, p.min, p.max, "matching nodes", names)


def count_outcome(n: int, count: int | None, lo: int | None, hi: int | None, what: str, observed: Any) -> Outcome:
    """Compare a count with `count` (exact) or `min`/`max`."""
    if count is not None and n != count:
        return Outcome(False, f"{n} {what}, expected {count}", observed)
    if lo is not None and n < lo:
        return Outcome(False, f"{n} {what}, expected at least {lo}", observed)
    if hi is not None and n > hi:
        return Outcome(False, f"{n} {what}, expected at most {hi}", observed)
    return Outcome(True, f"{n} {what}", observed)
