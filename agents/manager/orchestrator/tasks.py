"""Task helpers every orchestration loop shares (SwarmKit's ``orchestrator/task.go`` and ``service.go``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from agents.manager.scheduler.constraints import node_matches, parse_constraints
from agents.state.objects import (
    Annotations,
    Cluster,
    Endpoint,
    Node,
    NodeAvailability,
    NodeState,
    Service,
    ServiceMode,
    Task,
    TaskState,
    TaskStatus,
    new_id,
    task_name,
)
from agents.state.store import Store
from agents.state.tx import Tx

SlotKey = int | str
"""A replicated task's slot number, or a global task's node id."""

NS = 1_000_000_000


def seconds(ns: int) -> float:
    """Durations are stored as int nanoseconds; asyncio wants float seconds."""
    return ns / NS


def is_replicated(service: Service | None) -> bool:
    return service is not None and service.spec.mode is ServiceMode.REPLICATED


def is_global(service: Service | None) -> bool:
    return service is not None and service.spec.mode is ServiceMode.GLOBAL


def is_live(service: Service | None) -> bool:
    """A service whose tasks should run (exists and is not being deleted)."""
    return service is not None and not service.pending_delete


def slot_key(service: Service, task: Task) -> SlotKey:
    return task.node_id if is_global(service) else task.slot


def cluster_of(reader: Store | Tx) -> Cluster | None:
    clusters = reader.list(Cluster)
    return clusters[0] if clusters else None


def new_task(cluster: Cluster | None, service: Service, slot: int, node_id: str, now: float) -> Task:
    """A fresh task for ``slot`` (replicated) or ``node_id`` (global), desired RUNNING, status NEW."""
    tid = new_id()
    log_driver = service.spec.task_template.log_driver
    if log_driver is None and cluster is not None:
        log_driver = cluster.spec.task_defaults.log_driver
    return Task(
        id=tid,
        service_id=service.id,
        slot=slot,
        node_id=node_id,
        spec=service.spec.task_template.copy(),
        spec_version=service.spec_version,
        service_annotations=Annotations(service.spec.name, dict(service.spec.labels)),
        annotations=Annotations(task_name(service.spec.name, tid, slot, node_id)),
        desired_state=TaskState.RUNNING,
        status=TaskStatus(timestamp=now, state=TaskState.NEW, message="created"),
        endpoint=Endpoint(spec=service.spec.endpoint_spec.copy()),
        log_driver=log_driver.copy() if log_driver is not None else None,
    )


def invalid_node(node: Node | None) -> bool:
    """Tasks on such a node must be replaced: gone, down, or drained."""
    return (
        node is None
        or node.status.state is NodeState.DOWN
        or node.spec.availability is NodeAvailability.DRAIN
    )


def constraints_match(service: Service, node: Node | None) -> bool:
    """Placement constraints; unparsable ones constrain nothing (SwarmKit ignores the parse error)."""
    if node is None:
        return False
    exprs = service.spec.task_template.placement.constraints
    if not exprs:
        return True
    try:
        parsed = parse_constraints(exprs)
    except ValueError:
        return True
    return node_matches(parsed, node)


def is_task_dirty(service: Service, task: Task, node: Node | None) -> bool:
    """Does the task run an older spec than the service's? A version difference alone is not enough
    (scaling bumps the version but not the task template); a placement-only change leaves tasks whose
    node still matches alone."""
    if task.spec_version == service.spec_version:
        return False
    want = service.spec.task_template
    if want != task.spec:
        placement_only = want.placement != task.spec.placement and (
            dataclasses.replace(want, placement=task.spec.placement) == task.spec
        )
        if not (placement_only and constraints_match(service, node)):
            return True
    return task.endpoint is not None and task.endpoint.spec != service.spec.endpoint_spec


def task_timestamp(task: Task) -> float:
    return task.status.timestamp


def by_timestamp(tasks: Iterable[Task]) -> list[Task]:
    """Oldest first (status timestamp, then creation time)."""
    return sorted(tasks, key=lambda t: (t.status.timestamp, t.meta.created_at))


def runnable(tasks: Iterable[Task]) -> list[Task]:
    """Tasks meant to run (desired state at most RUNNING): what fills a slot."""
    return [t for t in tasks if t.desired_state <= TaskState.RUNNING]


def runnable_slots(reader: Store | Tx, service: Service) -> dict[SlotKey, list[Task]]:
    """The service's runnable tasks grouped by slot (replicated) or node (global)."""
    out: dict[SlotKey, list[Task]] = {}
    glob = is_global(service)
    for t in reader.tasks_by_service(service.id):
        if t.desired_state <= TaskState.RUNNING:
            out.setdefault(t.node_id if glob else t.slot, []).append(t)
    return out


def slot_tasks(reader: Store | Tx, service: Service, key: SlotKey) -> list[Task]:
    """All tasks (any state) of one slot (replicated) or of the service on one node (global)."""
    if isinstance(key, str):
        return [t for t in reader.tasks_by_node(key) if t.service_id == service.id]
    return reader.tasks_by_slot(service.id, key)


def set_desired(tx: Tx, task_id: str, state: TaskState) -> bool:
    """Raise a task's desired state (never lower it); False if the task is gone or already past it."""
    cur = tx.get(Task, task_id)
    if cur is None or cur.desired_state >= state:
        return False
    t = cur.copy()
    t.desired_state = state
    tx.update(t)
    return True
