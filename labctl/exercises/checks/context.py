"""What a check sees: the lab, Docker clients per node, and cluster reads cached for one polling round.

Several checks polled together read `/nodes`, `/services` and `/tasks` once per round, not once each.
Cluster-wide reads go to the first node (managers first) whose engine says it has the control plane,
so a lab whose first manager was halted still grades.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labctl.exercises.checks.registry import CheckError, Watcher
from labctl.exercises.target import Target


def is_not_found(exc: BaseException) -> bool:
    return type(exc).__name__ == "NotFound" or getattr(exc, "status_code", None) == 404


def explain(exc: BaseException) -> str:
    """A Docker/SDK error in one line (the daemon's message when there is one)."""
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0][:300]


def attrs_of(obj: Any) -> dict[str, Any]:
    return obj.attrs if hasattr(obj, "attrs") else obj  # type: ignore[no-any-return]


class CheckContext:
    def __init__(self, target: Target, memory: dict[str, Any] | None = None,
                 watchers: dict[str, Watcher] | None = None) -> None:
        self.target = target
        self.lab = target.lab
        self.memory: dict[str, Any] = memory if memory is not None else {}
        self.watchers: dict[str, Watcher] = watchers if watchers is not None else {}  # check id → its watcher
        self.step_id: str | None = None  # the step whose check is being evaluated
        self.check_id: str | None = None  # the check being evaluated (or begun)
        self._cache: dict[Any, Any] = {}

    # ----- rounds ------------------------------------------------------------------------------------------
    def new_round(self) -> None:
        """Forget what was read: the next reads see fresh state."""
        self._cache.clear()

    def _cached(self, key: Any, read: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = (True, read())
            except CheckError as e:
                self._cache[key] = (False, e)
            except Exception as e:  # the SDK's errors (connection refused, 5xx) become a failed check
                self._cache[key] = (False, CheckError(explain(e)))
        ok, value = self._cache[key]
        if not ok:
            raise value
        return value

    # ----- per node ----------------------------------------------------------------------------------------
    def docker(self, node: str) -> Any:
        return self.target.docker(node)

    def info(self, node: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            try:
                return dict(self.docker(node).info())
            except Exception as e:
                raise CheckError(f"the engine on {node} does not answer ({explain(e)})") from None

        return self._cached(("info", node), read)  # type: ignore[no-any-return]

    # ----- cluster -----------------------------------------------------------------------------------------
    def manager(self) -> Any:
        """A client for a node with the control plane (managers of the plan first)."""

        def find() -> str:
            planned = sorted(self.lab.nodes, key=lambda n: n.role != "manager")
            errors = []
            for n in planned:
                try:
                    swarm = self.info(n.name).get("Swarm") or {}
                except CheckError as e:
                    errors.append(str(e))
                    continue
                if swarm.get("ControlAvailable"):
                    return n.name
            detail = f" ({errors[0]})" if errors else ""
            raise CheckError(f"no manager of the swarm answers{detail}")

        return self.docker(self._cached("manager", find))

    def nodes(self) -> list[dict[str, Any]]:
        return self._cached("nodes", lambda: [attrs_of(n) for n in self.manager().nodes.list()])  # type: ignore[no-any-return]

    def swarm_node(self, name: str) -> dict[str, Any]:
        """The swarm's node object for a lab node name (its hostname), or its ID."""
        for n in self.nodes():
            if n.get("Description", {}).get("Hostname") == name or n.get("ID") == name:
                return n
        raise CheckError(f"node {name} is not part of the swarm")

    def node_name(self, node_id: str) -> str:
        for n in self.nodes():
            if n.get("ID") == node_id:
                return str(n.get("Description", {}).get("Hostname") or node_id)
        return node_id

    def services(self) -> list[Any]:
        return self._cached("services", lambda: list(self.manager().services.list()))  # type: ignore[no-any-return]

    def service(self, name: str) -> Any:
        for s in self.services():
            if attrs_of(s).get("Spec", {}).get("Name") == name or attrs_of(s).get("ID") == name:
                return s
        raise CheckError(f"there is no service {name}")

    def service_spec(self, name: str) -> dict[str, Any]:
        return attrs_of(self.service(name)).get("Spec", {})  # type: ignore[no-any-return]

    def tasks(self, service: str) -> list[dict[str, Any]]:
        svc = self.service(service)
        return self._cached(("tasks", service), lambda: [attrs_of(t) for t in svc.tasks()])  # type: ignore[no-any-return]

    def secrets(self) -> list[dict[str, Any]]:
        return self._cached("secrets", lambda: [attrs_of(s) for s in self.manager().secrets.list()])  # type: ignore[no-any-return]


def running(task: dict[str, Any]) -> bool:
    return task.get("Status", {}).get("State") == "running" and task.get("DesiredState") == "running"
