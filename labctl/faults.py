"""Engine-neutral faults for exercises: node power and network through the provider; "kill a task's
container" through the Docker API (find the task via a manager's tasks API, then remove its container
with force on the node that runs it, as a crash would), so it works on labagent and real Docker alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from labctl.errors import LabError


class Driver(Protocol):
    def halt(self, node: str) -> None: ...
    def start(self, node: str) -> None: ...
    def kill(self, node: str) -> None: ...
    def partition(self, groups: Sequence[Sequence[str]]) -> None: ...
    def heal(self) -> None: ...


def _hostname(nodes: list[Any], node_id: str) -> str:
    for n in nodes:
        attrs = n.attrs if hasattr(n, "attrs") else n
        if attrs.get("ID") == node_id:
            return str(attrs.get("Description", {}).get("Hostname") or node_id)
    return node_id


def kill_task(manager: Any, docker_for: Callable[[str], Any], service: str, node: str | None = None,
              slot: int | None = None) -> str:
    """Remove (force) the container of one running task of `service`; returns a description of what died."""
    try:
        svc = manager.services.get(service)
        tasks = [t.attrs if hasattr(t, "attrs") else t for t in svc.tasks(filters={"desired-state": "running"})]
        nodes = manager.nodes.list()
    except Exception as e:
        raise LabError(f"cannot list the tasks of {service}: {getattr(e, 'explanation', None) or e}") from None
    candidates = []
    for t in sorted(tasks, key=lambda t: (t.get("Slot") or 0, str(t.get("ID")))):
        status = t.get("Status", {})
        cid = (status.get("ContainerStatus") or {}).get("ContainerID")
        where = _hostname(nodes, str(t.get("NodeID", "")))
        if status.get("State") != "running" or not cid:
            continue
        if (node is None or where == node) and (slot is None or t.get("Slot") == slot):
            candidates.append((where, cid, t))
    if not candidates:
        raise LabError(f"no running task of {service}{' on ' + node if node else ''}{f' in slot {slot}' if slot else ''}")
    where, cid, task = candidates[0]
    try:
        docker_for(where).containers.get(cid).remove(force=True)
    except Exception as e:
        raise LabError(f"cannot kill the container of task {task.get('ID')} on {where}: "
                       f"{getattr(e, 'explanation', None) or e}") from None
    return f"killed task {str(task.get('ID'))[:12]} ({service}.{task.get('Slot', '')}) on {where}"


def apply(action: str, value: Any, driver: Driver, manager: Callable[[], Any], docker_for: Callable[[str], Any],
          sleep: Callable[[float], None] = time.sleep) -> str:
    """Apply one fault (`halt`, `start`, `kill`, `partition`, `heal`, `kill_task`, `wait`); returns what was done."""
    if action == "halt":
        driver.halt(value)
        return f"{value} halted"
    if action == "start":
        driver.start(value)
        return f"{value} started"
    if action == "kill":
        driver.kill(value)
        return f"agent on {value} killed"
    if action == "partition":
        driver.partition(value)
        return " | ".join(",".join(g) for g in value) + " partitioned"
    if action == "heal":
        driver.heal()
        return "network healed"
    if action == "kill_task":
        return kill_task(manager(), docker_for, value.service, value.node, value.slot)
    if action == "wait":
        sleep(float(value))
        return f"waited {value:g}s"
    raise LabError(f"unknown fault {action!r}")
