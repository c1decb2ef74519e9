"""What the scheduler knows about one node: its tasks, counts per service, host ports, free resources.

Mirrors SwarmKit's ``NodeInfo``. A task counts as *active* while its desired state is at most COMPLETE
(a task being shut down still occupies the node, but no longer counts for spreading); its resource
reservations and host-mode ports stay taken until it leaves the node info (terminal or removed).
Kept up to date incrementally from watch events; never shared outside the scheduler.
"""

from __future__ import annotations

from collections import deque

from agents.state.objects import Node, PortProtocol, PublishMode, Task, TaskState

ACTIVE_MAX = TaskState.COMPLETE
"""Tasks whose desired state is <= this count as active (SwarmKit: ``DesiredState <= Completed``)."""

FAILURE_WINDOW_S = 300.0
"""SwarmKit's ``monitorFailures``: failures older than this are forgotten."""

MAX_FAILURES = 5
"""SwarmKit's ``maxFailures``: at this many recent failures a node is ranked after the others."""

HostPort = tuple[PortProtocol, int]


def host_ports(task: Task) -> list[HostPort]:
    """Host-mode published ports the task needs on its node (from the endpoint the allocator copied in)."""
    ep = task.endpoint
    if ep is None:
        return []
    return [
        (p.protocol, p.published_port)
        for p in ep.ports
        if p.publish_mode == PublishMode.HOST and p.published_port != 0
    ]


class NodeInfo:
    __slots__ = (
        "active",
        "avail_cpu",
        "avail_mem",
        "by_service",
        "failures",
        "node",
        "ports",
        "tasks",
    )

    def __init__(self, node: Node) -> None:
        self.node = node
        self.tasks: dict[str, Task] = {}
        self.active = 0
        self.by_service: dict[str, int] = {}
        self.ports: dict[HostPort, int] = {}
        """Host port -> number of tasks holding it (normally 1)."""
        res = node.description.resources
        self.avail_cpu = res.nano_cpus
        self.avail_mem = res.memory_bytes
        self.failures: dict[tuple[str, int], deque[float]] = {}
        """(service id, spec version) -> monotonic times of recent task failures on this node."""

    @property
    def id(self) -> str:
        return self.node.id

    def set_node(self, node: Node) -> None:
        """A new version of the node object: recompute free resources from its capacity."""
        self.node = node
        res = node.description.resources
        self.avail_cpu, self.avail_mem = res.nano_cpus, res.memory_bytes
        for t in self.tasks.values():
            r = t.spec.resources.reservations
            self.avail_cpu -= r.nano_cpus
            self.avail_mem -= r.memory_bytes

    def add_task(self, t: Task) -> bool:
        """Add or update ``t``; True if a count changed."""
        old = self.tasks.get(t.id)
        self.tasks[t.id] = t
        if old is not None:
            was, now = old.desired_state <= ACTIVE_MAX, t.desired_state <= ACTIVE_MAX
            if was != now:
                self._count(t.service_id, 1 if now else -1)
                return True
            return False
        if t.desired_state <= ACTIVE_MAX:
            self._count(t.service_id, 1)
        ports = self.ports
        for hp in host_ports(t):
            ports[hp] = ports.get(hp, 0) + 1
        r = t.spec.resources.reservations
        self.avail_cpu -= r.nano_cpus
        self.avail_mem -= r.memory_bytes
        return True

    def remove_task(self, task_id: str) -> bool:
        """Forget a task (terminal, removed or moved away); True if it was here."""
        old = self.tasks.pop(task_id, None)
        if old is None:
            return False
        if old.desired_state <= ACTIVE_MAX:
            self._count(old.service_id, -1)
        ports = self.ports
        for hp in host_ports(old):
            n = ports.get(hp, 0) - 1
            if n > 0:
                ports[hp] = n
            else:
                ports.pop(hp, None)
        r = old.spec.resources.reservations
        self.avail_cpu += r.nano_cpus
        self.avail_mem += r.memory_bytes
        return True

    def _count(self, service_id: str, delta: int) -> None:
        self.active += delta
        n = self.by_service.get(service_id, 0) + delta
        if n:
            self.by_service[service_id] = n
        else:
            self.by_service.pop(service_id, None)

    # ------------------------------------------------------------------------------------ failures

    def task_failed(self, t: Task, now: float) -> None:
        """Remember a failure so a crash-looping service is steered to other nodes for a while."""
        q = self.failures.setdefault((t.service_id, t.spec_version), deque())
        q.append(now)
        self._expire(q, now)

    def recent_failures(self, service_id: str, spec_version: int, now: float) -> int:
        q = self.failures.get((service_id, spec_version))
        if not q:
            return 0
        self._expire(q, now)
        return len(q)

    def _expire(self, q: deque[float], now: float) -> None:
        while q and now - q[0] > FAILURE_WINDOW_S:
            q.popleft()
