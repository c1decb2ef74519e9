"""Small builders shared by the state tests."""

from __future__ import annotations

import random

from agents.state.objects import (
    Annotations,
    ContainerSpec,
    Node,
    NodeDescription,
    NodeSpec,
    Service,
    ServiceSpec,
    Task,
    TaskSpec,
    TaskState,
    TaskStatus,
    new_id,
    task_name,
)
from agents.state.store import Store


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def store() -> Store:
    return Store(clock=Clock())


def service(name: str = "web", replicas: int = 1, rng: random.Random | None = None) -> Service:
    return Service(
        id=new_id(rng),
        spec=ServiceSpec(
            name=name, replicas=replicas, task_template=TaskSpec(container=ContainerSpec(image="nginx:1.25"))
        ),
    )


def task(svc: Service, slot: int = 1, node_id: str = "", rng: random.Random | None = None) -> Task:
    tid = new_id(rng)
    return Task(
        id=tid,
        service_id=svc.id,
        slot=slot,
        node_id=node_id,
        spec=svc.spec.task_template.copy(),
        service_annotations=Annotations(name=svc.spec.name),
        annotations=Annotations(name=task_name(svc.spec.name, tid, slot=slot, node_id=node_id)),
        desired_state=TaskState.RUNNING,
        status=TaskStatus(state=TaskState.NEW),
    )


def node(hostname: str, rng: random.Random | None = None) -> Node:
    return Node(id=new_id(rng), spec=NodeSpec(), description=NodeDescription(hostname=hostname))
