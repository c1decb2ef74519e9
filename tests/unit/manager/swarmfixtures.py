"""Builders for scheduler/allocator tests: nodes, services, tasks, and a committer that counts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

from agents.manager.loop import ControlLoop, LocalCommitter
from agents.state.changeset import Changeset
from agents.state.objects import (
    Annotations,
    ContainerSpec,
    EngineDescription,
    Node,
    NodeAvailability,
    NodeDescription,
    NodeRole,
    NodeSpec,
    NodeState,
    NodeStatus,
    Placement,
    Platform,
    Resources,
    Service,
    ServiceSpec,
    Task,
    TaskSpec,
    TaskState,
    TaskStatus,
    new_id,
    task_name,
)
from agents.state.store import ApplyResult, Store


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def make_store() -> Store:
    return Store(clock=Clock())


class CountingCommitter(LocalCommitter):
    """Applies locally and records how many changesets (and ops) went through."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.sizes: list[int] = []
        self.rejected = 0

    async def commit(self, changeset: Changeset) -> ApplyResult:
        self.sizes.append(len(changeset.ops))
        result = await super().commit(changeset)
        self.rejected += not result.ok
        return result

    @property
    def commits(self) -> int:
        return len(self.sizes)


def make_node(
    hostname: str,
    *,
    rng: random.Random | None = None,
    state: NodeState = NodeState.READY,
    availability: NodeAvailability = NodeAvailability.ACTIVE,
    labels: dict[str, str] | None = None,
    engine_labels: dict[str, str] | None = None,
    role: NodeRole = NodeRole.WORKER,
    os: str = "linux",
    arch: str = "x86_64",
    addr: str = "",
    cpus: int = 0,
    memory: int = 0,
) -> Node:
    return Node(
        id=new_id(rng),
        spec=NodeSpec(labels=dict(labels or {}), availability=availability, role=role),
        description=NodeDescription(
            hostname=hostname,
            platform=Platform(os=os, architecture=arch),
            resources=Resources(nano_cpus=cpus, memory_bytes=memory),
            engine=EngineDescription(labels=dict(engine_labels or {})),
        ),
        status=NodeStatus(state=state, addr=addr),
        role=role,
    )


def add_nodes(store: Store, count: int, prefix: str = "node", **kw: object) -> list[Node]:
    nodes = [make_node(f"{prefix}{i}", **kw) for i in range(count)]  # type: ignore[arg-type]
    with store.local_batch() as tx:
        for n in nodes:
            tx.create(n)
    return nodes


def add_service(
    store: Store, name: str = "web", replicas: int = 1, placement: Placement | None = None
) -> Service:
    svc = Service(
        id=new_id(),
        spec=ServiceSpec(
            name=name,
            replicas=replicas,
            task_template=TaskSpec(
                container=ContainerSpec(image="nginx"), placement=placement or Placement()
            ),
        ),
    )
    with store.local_batch() as tx:
        tx.create(svc)
    return svc


def make_task(svc: Service, slot: int, state: TaskState = TaskState.PENDING, node_id: str = "") -> Task:
    tid = new_id()
    return Task(
        id=tid,
        service_id=svc.id,
        slot=slot,
        node_id=node_id,
        spec=svc.spec.task_template,
        spec_version=svc.spec_version,
        service_annotations=Annotations(name=svc.spec.name),
        annotations=Annotations(name=task_name(svc.spec.name, tid, slot=slot, node_id=node_id)),
        desired_state=TaskState.RUNNING,
        status=TaskStatus(state=state),
    )


def add_tasks(
    store: Store, svc: Service, count: int, state: TaskState = TaskState.PENDING, first_slot: int = 1
) -> list[Task]:
    tasks = [make_task(svc, first_slot + i, state) for i in range(count)]
    with store.local_batch() as tx:
        for t in tasks:
            tx.create(t)
    return tasks


def update(store: Store, obj_kind: type, oid: str, change: Callable[[object], None]) -> None:
    """Copy, change and commit one stored object."""
    cur = store.get(obj_kind, oid)
    assert cur is not None
    new = cur.copy()
    change(new)
    with store.local_batch() as tx:
        tx.update(new)


def per_node(store: Store, service_id: str | None = None) -> dict[str, int]:
    """Hostname -> number of assigned tasks (of one service, if given)."""
    out: dict[str, int] = {n.description.hostname: 0 for n in store.list(Node)}
    for t in store.list(Task):
        if t.node_id and (service_id is None or t.service_id == service_id):
            node = store.get(Node, t.node_id)
            assert node is not None
            out[node.description.hostname] += 1
    return out


async def eventually(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(*loops: ControlLoop) -> AsyncIterator[None]:
    for lp in loops:
        lp.start()
    try:
        await asyncio.sleep(0)
        yield
    finally:
        for lp in loops:
            assert lp.running, f"{lp.name} died"
            await lp.stop()
