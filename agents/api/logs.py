"""``docker service logs`` / task logs: ``GET /services/{id}/logs`` and ``GET /tasks/{id}/logs``.

As dockerd, every line carries the swarm context as details (``com.docker.swarm.node.id``,
``.service.id``, ``.task.id``) when ``details=true``; the CLI always asks for them and builds its
``web.1.<task>@<node>    | `` prefix from them (looking the task and node up itself), then hides
them unless ``--details``. Lines come from the worker of the node each task ran on: read locally for
this node's tasks, over the node log endpoint (``agents.api.nodelogs``) for the others. Without
``follow`` all lines are sorted by time; with it, lines are written as they arrive and tasks that
start later (a scale-up, a replacement) join the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from agents.api.logstream import LogOptions, node_worker, render, start_stream, worker_entries
from agents.api.nodelogs import fetch_remote
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.api.services import find_service
from agents.api.swarmaccess import cluster_read
from agents.api.tasks import find_task
from agents.context import NodeContext
from agents.state.objects import Node, Task
from agents.state.store import Store
from agents.worker.executor.logs import LogEntry

if TYPE_CHECKING:
    from agents.manager.manager import Manager

routes = RouteTable("logs")

NEW_TASK_POLL_S = 1.0


def context_attrs(task: Task) -> dict[str, str]:
    return {
        "com.docker.swarm.node.id": task.node_id,
        "com.docker.swarm.service.id": task.service_id,
        "com.docker.swarm.task.id": task.id,
    }


def _local_node_id(ctx: NodeContext) -> str:
    state = getattr(ctx.swarm, "state", None)
    return str(getattr(state, "node_id", ""))


def task_source(ctx: NodeContext, store: Store, task: Task, opts: LogOptions) -> AsyncIterator[LogEntry]:
    """Where one task's lines come from: this node's worker, or the node that ran it."""
    if task.node_id == _local_node_id(ctx):
        return worker_entries(node_worker(ctx), task.id, opts)
    node = store.get(Node, task.node_id)
    addr = node.status.addr if node is not None else ""
    if not addr:
        return _nothing()
    return fetch_remote(ctx, addr, task.id, opts)


async def _nothing() -> AsyncIterator[LogEntry]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _collect(source: AsyncIterator[LogEntry]) -> list[LogEntry]:
    out: list[LogEntry] = []
    with contextlib.suppress(OSError, asyncio.TimeoutError, Exception):
        async for e in source:
            out.append(e)
    return out


async def stream_logs(
    request: web.Request, store: Store, tasks: list[Task], opts: LogOptions, service_id: str | None = None
) -> web.StreamResponse:
    ctx = node_context(request)
    resp = await start_stream(request)
    tasks = [t for t in tasks if t.node_id]
    if not opts.follow:
        batches = await asyncio.gather(*(_collect(task_source(ctx, store, t, opts)) for t in tasks))
        lines = [(e, t) for t, batch in zip(tasks, batches, strict=True) for e in batch]
        lines.sort(key=lambda et: et[0].time)
        for e, t in lines:
            await resp.write(render(e, opts, context_attrs(t)))
        await resp.write_eof()
        return resp
    await _follow(resp, ctx, store, tasks, opts, service_id)
    return resp


async def _follow(
    resp: web.StreamResponse,
    ctx: NodeContext,
    store: Store,
    tasks: list[Task],
    opts: LogOptions,
    service_id: str | None,
) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)
    readers: dict[str, asyncio.Task[None]] = {}

    async def pump(t: Task) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            async for e in task_source(ctx, store, t, opts):
                await queue.put(render(e, opts, context_attrs(t)))

    def watch(t: Task) -> None:
        if t.id not in readers and t.node_id:
            readers[t.id] = asyncio.ensure_future(pump(t))

    async def discover() -> None:
        while service_id is not None:
            await asyncio.sleep(NEW_TASK_POLL_S)
            for t in store.tasks_by_service(service_id):
                watch(t)

    for t in tasks:
        watch(t)
    finder = asyncio.ensure_future(discover())
    try:
        while True:
            data = await queue.get()
            await resp.write(data)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        finder.cancel()
        for r in readers.values():
            r.cancel()


@routes.get("/services/{id}/logs")
@cluster_read
async def service_logs(request: web.Request, manager: Manager) -> web.StreamResponse:
    opts = LogOptions.from_request(request)
    store = manager.store
    svc = find_service(store, request.match_info["id"])
    tasks = sorted(store.tasks_by_service(svc.id), key=lambda t: (t.slot, t.node_id, t.meta.created_at))
    return await stream_logs(request, store, tasks, opts, svc.id)


@routes.get("/tasks/{id}/logs")
@cluster_read
async def task_logs(request: web.Request, manager: Manager) -> web.StreamResponse:
    opts = LogOptions.from_request(request)
    store = manager.store
    task = find_task(store, request.match_info["id"])
    return await stream_logs(request, store, [task], opts)
