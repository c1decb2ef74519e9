"""Test doubles for the worker: a session that records reports, task builders, an assignments helper."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents.state.objects import (
    SECOND,
    Annotations,
    ContainerSpec,
    NetworkAttachment,
    SecretReference,
    Task,
    TaskSpec,
    TaskState,
)
from agents.worker.session import AssignedSecret, Assignments


class FakeSession:
    """Records ``report()`` calls; lets tests wait for a task to reach a state."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}

    def report(self, updates: list[dict[str, Any]]) -> None:
        for u in updates:
            self.updates.append(u)
            self.latest[u["task_id"]] = u

    def states(self, task_id: str) -> list[str]:
        return [u["state"] for u in self.updates if u["task_id"] == task_id]

    async def wait(self, task_id: str, *states: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            u = self.latest.get(task_id)
            if u is not None and u["state"] in states:
                return u
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} never reached {states}; reports: {self.states(task_id)}")
            await asyncio.sleep(0.01)


def make_task(
    task_id: str,
    image: str = "alpine",
    *,
    args: list[str] | None = None,
    command: list[str] | None = None,
    env: list[str] | None = None,
    secrets: list[tuple[str, str]] | None = None,
    grace_s: float = 10.0,
    stop_signal: str = "",
    desired: TaskState = TaskState.RUNNING,
    status: TaskState = TaskState.ASSIGNED,
    addresses: list[tuple[str, str]] | None = None,
    slot: int = 1,
) -> Task:
    """A task as the dispatcher sends it. ``secrets``: (secret id, file name)."""
    t = Task(
        id=task_id,
        service_id="svc1",
        slot=slot,
        node_id="node1",
        spec=TaskSpec(
            container=ContainerSpec(
                image=image,
                command=command or [],
                args=args or [],
                env=env or [],
                secrets=[SecretReference(secret_id=sid, secret_name=name, file_name=name) for sid, name in secrets or []],
                stop_grace_period=int(grace_s * SECOND),
                stop_signal=stop_signal,
            )
        ),
        service_annotations=Annotations(name="web"),
        annotations=Annotations(name=f"web.{slot}.{task_id}"),
        desired_state=desired,
        networks=[NetworkAttachment(network_id=n, addresses=[a]) for n, a in addresses or []],
    )
    t.status.state = status
    return t


def assign(tasks: list[Task], *, full: bool = False, removed: list[str] | None = None,
           secrets: dict[str, bytes] | None = None) -> Assignments:
    return Assignments(
        full=full,
        tasks=[t.copy() for t in tasks],
        removed=removed or [],
        secrets=[AssignedSecret(sid, sid, data) for sid, data in (secrets or {}).items()],
    )
