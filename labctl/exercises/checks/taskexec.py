"""Running a command inside one of a service's task containers through the Docker exec API
(POST /containers/{id}/exec, POST /exec/{id}/start, GET /exec/{id}/json) on the node that runs it."""

from __future__ import annotations

from collections.abc import Sequence

from labctl.exercises.checks.context import CheckContext, explain, running
from labctl.exercises.checks.registry import CheckError


def exec_in_task(ctx: CheckContext, service: str, argv: Sequence[str], node: str | None = None) -> tuple[str, int, str]:
    """(node, exit code, output) of `argv` in a running task of `service` (on `node` if given)."""
    tasks = [t for t in ctx.tasks(service) if running(t)]
    if node is not None:
        tasks = [t for t in tasks if ctx.node_name(str(t.get("NodeID", ""))) == node]
    tasks = [t for t in tasks if (t.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")]
    if not tasks:
        raise CheckError(f"no running task of {service}{' on ' + node if node else ''} to look inside")
    task = sorted(tasks, key=lambda t: (t.get("Slot") or 0, str(t.get("ID"))))[0]
    where = ctx.node_name(str(task.get("NodeID", "")))
    if where not in ctx.lab.names:
        raise CheckError(f"task {task.get('ID')} of {service} runs on {where}, which is not a node of this lab")
    cid = task["Status"]["ContainerStatus"]["ContainerID"]
    try:
        result = ctx.docker(where).containers.get(cid).exec_run(list(argv))
    except Exception as e:
        raise CheckError(f"cannot exec in {service}'s container on {where}: {explain(e)}") from None
    output = result.output if isinstance(result.output, bytes) else b"".join(result.output or [])
    return where, int(result.exit_code or 0), output.decode("utf-8", "replace")
