"""Node filters and the pipeline that runs them, with Docker's explanations of why nothing fits.

Same filters, order and wording as SwarmKit's ``filter.go``/``pipeline.go``: readiness first, then
resources, constraints, platform, host-mode ports, max replicas per node. A node is charged to the *first*
filter it fails; ``explain`` lists the failing filters, most failures first (ties in pipeline order),
e.g. ``scheduling constraints not satisfied on 3 nodes; 1 node not available for new tasks``.

Filters are set up once per task group (tasks of one service version share a spec). ``dynamic`` filters
depend on what is already placed on the node and are re-checked after each placement; the others depend
only on the node object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from agents.manager.scheduler.constraints import Constraint, node_matches, parse_constraints
from agents.manager.scheduler.nodeinfo import HostPort, NodeInfo, host_ports
from agents.state.objects import NodeAvailability, NodeState, Platform, Task


def _nodes(n: int, what: str) -> str:
    return f"{what} on 1 node" if n == 1 else f"{what} on {n} nodes"


class Filter(ABC):
    dynamic = False

    @abstractmethod
    def set_task(self, t: Task) -> bool:
        """Configure for ``t``; False when the filter does not apply to it."""

    @abstractmethod
    def check(self, ni: NodeInfo) -> bool: ...

    @abstractmethod
    def explain(self, nodes: int) -> str: ...


class ReadyFilter(Filter):
    def set_task(self, t: Task) -> bool:
        return True

    def check(self, ni: NodeInfo) -> bool:
        n = ni.node
        return n.status.state == NodeState.READY and n.spec.availability == NodeAvailability.ACTIVE

    def explain(self, nodes: int) -> str:
        if nodes == 1:
            return "1 node not available for new tasks"
        return f"{nodes} nodes not available for new tasks"


class ResourceFilter(Filter):
    dynamic = True

    def __init__(self) -> None:
        self.cpu = self.mem = 0

    def set_task(self, t: Task) -> bool:
        r = t.spec.resources.reservations
        self.cpu, self.mem = r.nano_cpus, r.memory_bytes
        return bool(self.cpu or self.mem)

    def check(self, ni: NodeInfo) -> bool:
        return self.cpu <= ni.avail_cpu and self.mem <= ni.avail_mem

    def explain(self, nodes: int) -> str:
        return _nodes(nodes, "insufficient resources")


class ConstraintFilter(Filter):
    def __init__(self) -> None:
        self.constraints: list[Constraint] = []

    def set_task(self, t: Task) -> bool:
        exprs = t.spec.placement.constraints
        if not exprs:
            return False
        try:
            self.constraints = parse_constraints(exprs)
        except ValueError:
            return False  # validated at the API; like SwarmKit, an invalid list disables the filter
        return True

    def check(self, ni: NodeInfo) -> bool:
        return node_matches(self.constraints, ni.node)

    def explain(self, nodes: int) -> str:
        return _nodes(nodes, "scheduling constraints not satisfied")


def _norm_arch(arch: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)


class PlatformFilter(Filter):
    def __init__(self) -> None:
        self.platforms: list[Platform] = []

    def set_task(self, t: Task) -> bool:
        self.platforms = t.spec.placement.platforms
        return bool(self.platforms)

    def check(self, ni: NodeInfo) -> bool:
        np = ni.node.description.platform
        arch = _norm_arch(np.architecture)
        return any(
            (p.architecture == "" or _norm_arch(p.architecture) == arch) and (p.os == "" or p.os == np.os)
            for p in self.platforms
        )

    def explain(self, nodes: int) -> str:
        return _nodes(nodes, "unsupported platform")


class HostPortFilter(Filter):
    dynamic = True

    def __init__(self) -> None:
        self.ports: list[HostPort] = []

    def set_task(self, t: Task) -> bool:
        self.ports = host_ports(t)
        return bool(self.ports)

    def check(self, ni: NodeInfo) -> bool:
        used = ni.ports
        return not any(p in used for p in self.ports)

    def explain(self, nodes: int) -> str:
        return _nodes(nodes, "host-mode port already in use")


class MaxReplicasFilter(Filter):
    dynamic = True

    def __init__(self) -> None:
        self.service_id = ""
        self.limit = 0

    def set_task(self, t: Task) -> bool:
        self.service_id, self.limit = t.service_id, t.spec.placement.max_replicas
        return self.limit > 0

    def check(self, ni: NodeInfo) -> bool:
        return ni.by_service.get(self.service_id, 0) < self.limit

    def explain(self, nodes: int) -> str:
        return "max replicas per node limit exceed"


class Pipeline:
    """The filters enabled for one task (group)."""

    def __init__(self, t: Task) -> None:
        candidates: list[Filter] = [
            ReadyFilter(),
            ResourceFilter(),
            ConstraintFilter(),
            PlatformFilter(),
            HostPortFilter(),
            MaxReplicasFilter(),
        ]
        self.filters = [f for f in candidates if f.set_task(t)]
        self.dynamic = [f for f in self.filters if f.dynamic]

    def check(self, ni: NodeInfo) -> bool:
        return all(f.check(ni) for f in self.filters)

    def check_dynamic(self, ni: NodeInfo) -> bool:
        """Re-check after placing a task on ``ni`` (the static filters cannot have changed)."""
        return all(f.check(ni) for f in self.dynamic)

    def first_failure(self, ni: NodeInfo) -> int | None:
        for i, f in enumerate(self.filters):
            if not f.check(ni):
                return i
        return None

    def explain(self, nodes: list[NodeInfo]) -> str:
        """Why no node in ``nodes`` fits, in Docker's words ("" if some node does)."""
        failures = [0] * len(self.filters)
        for ni in nodes:
            i = self.first_failure(ni)
            if i is not None:
                failures[i] += 1
        order = sorted(range(len(self.filters)), key=lambda i: -failures[i])
        return "; ".join(self.filters[i].explain(failures[i]) for i in order if failures[i])


def no_suitable_node(explanation: str) -> str:
    """The task error Docker shows in ``docker service ps`` for a task nothing can run."""
    return f"no suitable node ({explanation})" if explanation else "no suitable node"
