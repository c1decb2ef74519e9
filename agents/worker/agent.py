"""The worker: runs the tasks the dispatcher assigns to this node (SwarmKit's ``agent/worker.go`` and
``agent/exec/controller.go``, shrunk).

Each assigned task gets a controller coroutine that walks it ACCEPTED -> PREPARING -> READY -> STARTING
-> RUNNING and on to COMPLETE / FAILED (``task: non-zero exit (N)``) / SHUTDOWN / REJECTED, reporting
every transition through the session, which delivers the latest state of each task to whichever
manager leads (reports survive reconnects). Running tasks never depend on the session: a manager
failover or a lost connection changes nothing on the node, and a restarted agent adopts the tasks it
finds running (`Executor.restore`) instead of starting duplicates.

Assignments: a ``full`` set replaces what the node knows (tasks it lacks are stopped and removed), an
incremental one adds/updates ``tasks`` and removes ``removed``. Secrets stay in this process's memory
and reach a task only through its supervisor's pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.state import serde
from agents.state.objects import SECOND, Task, TaskState
from agents.worker.executor import base
from agents.worker.executor.base import Container, Executor, LogQuery, SecretFile, StartFailed, TaskRejected
from agents.worker.executor.logs import LogEntry
from agents.worker.views import summary

log = logging.getLogger(__name__)


def make_executor(state_dir: str) -> Executor:
    """The node's executor: a real Docker engine's when one answers at ``LABAGENT_DOCKER_HOST`` (a VM lab
    with Docker installed) or ``LABAGENT_EXECUTOR=docker``, else the process executor
    (`agents.worker.executor.docker.choose_executor` has the rules)."""
    import os

    from agents.worker.executor.docker import choose_executor

    choice = choose_executor(os.environ)
    log.info("task executor: %s (%s)", choice.kind, choice.reason)
    if choice.kind == "docker":
        from agents.worker.executor.docker import DockerExecutor

        return DockerExecutor(choice.engine, state_dir)
    from agents.worker.executor.process import ProcessExecutor

    return ProcessExecutor(state_dir)


class Reporter(Protocol):
    """The part of `agents.worker.session.WorkerSession` the worker uses."""

    def report(self, updates: list[dict[str, Any]]) -> None: ...


@dataclass
class _Run:
    """One task on this node: the latest Task from the manager, its container, and its controller."""

    task: Task
    container: Container | None = None
    state: TaskState = TaskState.ASSIGNED
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    controller: asyncio.Task[None] | None = None
    received: float = field(default_factory=time.monotonic)
    prepared: float = 0.0  # monotonic marks for the start-latency log line
    starting: float = 0.0
    assigned_at: float = 0.0  # the manager's timestamp of ASSIGNED (epoch seconds), when it arrived so
    removed: bool = False
    assigned: asyncio.Event = field(default_factory=asyncio.Event)  # the manager has sent it since we started


class NoSuchContainer(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


class Worker:
    """Applies assignments with ``executor``, reports through ``session`` (settable later: the session
    needs the worker's `apply` as its callback). ``start()`` adopts what the node already runs."""

    def __init__(self, state_dir: str, session: Reporter | None, executor: Executor, *, node_id: str = "") -> None:
        self.state_dir = state_dir
        self.session = session
        self.executor = executor
        self.node_id = node_id
        self._runs: dict[str, _Run] = {}
        self._secrets: dict[str, bytes] = {}
        self._removing: set[asyncio.Task[None]] = set()
        self.start_latencies: list[float] = []
        """Seconds from receiving a task to reporting it RUNNING (for benchmarks)."""
        self._started = False
        self._start_lock = asyncio.Lock()
        self._prewarming: asyncio.Task[None] | None = None
        self.mesh_drain: Callable[[str], Awaitable[object]] | None = None
        """Routing mesh: awaited before signalling a task that has networks, returns once every node has
        dropped it from its load-balancing maps (`agents.mesh.agent.MeshAgent.drain`, set by `SwarmNode`)."""

    # ------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Adopt the containers this node already has: running ones keep running and are watched.

        `apply` waits for this, so an early assignment never starts a duplicate of a task being adopted."""
        async with self._start_lock:
            if not self._started:
                await self._restore()
                self._started = True
                self._prewarming = asyncio.get_running_loop().create_task(self._prewarm())

    async def _restore(self) -> None:
        for c in await self.executor.restore():
            run = _Run(task=c.task, container=c, state=TaskState.RUNNING if c.running else c.task.status.state)
            self._runs[c.task.id] = run
            if c.running:
                self._report(run, TaskState.RUNNING, "started", pid=c.pid)
            run.controller = self._spawn(run)

    async def _prewarm(self) -> None:
        """Ahead of the first assignment: the executor's own preparations, and the Task codecs the
        session decodes assignments with (compiled on first use otherwise, delaying every task in it)."""
        await self.executor.prewarm()
        serde.warm(Task)

    async def stop(self) -> None:
        """Stop managing (agent shutdown): tasks keep running for the next agent to adopt."""
        ctrls = [r.controller for r in self._runs.values() if r.controller is not None]
        ctrls += list(self._removing)
        if self._prewarming is not None:
            ctrls.append(self._prewarming)
        for t in ctrls:
            t.cancel()
        for t in ctrls:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.executor.close()
        self._started = False

    async def shutdown_tasks(self) -> None:
        """Stop and remove every task (the node leaves the swarm)."""
        await asyncio.gather(*(self._remove(tid) for tid in list(self._runs)), return_exceptions=True)

    # ------------------------------------------------------------------------------------ assignments

    async def apply(self, a: Any) -> None:
        """Session callback: an `agents.worker.session.Assignments`."""
        if not self._started:
            await self.start()
        for s in a.secrets:
            self._secrets[s.id] = s.data
        for sid in a.removed_secrets:
            self._secrets.pop(sid, None)
        gone = list(a.removed)
        if a.full:
            keep = {t.id for t in a.tasks}
            gone += [tid for tid in self._runs if tid not in keep]
        for tid in gone:
            if tid in self._runs:
                t = asyncio.get_running_loop().create_task(self._remove(tid))
                self._removing.add(t)
                t.add_done_callback(self._removing.discard)
        for task in a.tasks:
            self._update(task)

    def _update(self, task: Task) -> None:
        run = self._runs.get(task.id)
        if run is not None:
            run.task = task
            run.changed.set()
            run.assigned.set()
            return
        if task.status.state.is_terminal:
            return  # finished before we knew it (e.g. before an agent restart): nothing to run
        run = _Run(task=task, state=task.status.state)
        if task.status.state == TaskState.ASSIGNED:
            run.assigned_at = task.status.timestamp
        self._runs[task.id] = run
        run.controller = self._spawn(run)

    def _spawn(self, run: _Run) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._control(run), name=f"task-{run.task.id}")

    # ------------------------------------------------------------------------------------- controller

    def _report(self, run: _Run, state: TaskState, message: str, *, err: str = "", **extra: Any) -> None:
        run.state = state
        update: dict[str, Any] = {"task_id": run.task.id, "state": state.docker_name, "message": message, "err": err}
        if run.container is not None:
            update["container_id"] = run.container.id
            if run.container.pid:
                update["pid"] = run.container.pid
        update.update(extra)
        update["timestamp"] = time.time()
        if self.session is not None:
            self.session.report([update])

    async def _wait_change(self, run: _Run) -> None:
        run.changed.clear()
        await run.changed.wait()

    async def _control(self, run: _Run) -> None:
        try:
            if run.container is not None and not run.container.running:
                # Found dead when the agent started (the node lost power): how it ends depends on what the
                # manager wants now (Shutdown if it was replaced meanwhile, as dockerd reports), so wait.
                await run.assigned.wait()
            if run.container is None and not await self._prepare_and_start(run):
                return
            await self._supervise(run)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not leave the task silently stuck
            log.exception("task %s: controller failed", run.task.id)
            if not run.state.is_terminal:
                self._report(run, TaskState.FAILED, "failed", err=f"worker error: {e}")

    async def _prepare_and_start(self, run: _Run) -> bool:
        task = run.task
        if task.desired_state > TaskState.RUNNING:
            self._report(run, TaskState.SHUTDOWN, "shutdown")
            return False
        if task.status.state == TaskState.RUNNING:
            # The manager saw it running, but this node has no container for it (lost with the disk).
            self._report(run, TaskState.FAILED, "started", err="task: container not found", exit_code=0)
            return False
        if task.status.state < TaskState.ACCEPTED:
            self._report(run, TaskState.ACCEPTED, "accepted")
        if task.status.state < TaskState.PREPARING:
            self._report(run, TaskState.PREPARING, "preparing")
        try:
            secrets = self._secret_files(task)
            run.container = await self.executor.create(task, secrets)
        except TaskRejected as e:
            self._report(run, TaskState.REJECTED, "preparing", err=str(e))
            return False
        except StartFailed as e:
            self._report(run, TaskState.REJECTED, "preparing", err=str(e))
            return False
        run.prepared = time.monotonic()
        if run.task.status.state < TaskState.READY:
            self._report(run, TaskState.READY, "prepared")
        while run.task.desired_state < TaskState.RUNNING:
            await self._wait_change(run)
        if run.task.desired_state > TaskState.RUNNING:
            self._report(run, TaskState.SHUTDOWN, "shutdown")
            return False
        if run.task.status.state < TaskState.STARTING:
            self._report(run, TaskState.STARTING, "starting")
        run.starting = time.monotonic()
        try:
            await self.executor.start(run.container)
        except StartFailed as e:
            code = run.container.exit_code
            self._report(run, TaskState.FAILED, "starting", err=str(e), exit_code=code if code is not None else 128)
            return False
        self.start_latencies.append(time.monotonic() - run.received)
        self._report(run, TaskState.RUNNING, "started", pid=run.container.pid)
        self._log_start(run)
        return True

    def _log_start(self, run: _Run) -> None:
        """One line per started task with its start latency (``bench/tasks.py`` reads it from node logs):
        from the manager's assignment (its timestamp travels with the task; clocks agree within a lab)
        and from the assignment's arrival on this node."""
        now = time.monotonic()
        steps = (f"{1000 * (now - run.received):.0f} ms after it arrived (prepared in "
                 f"{1000 * (run.prepared - run.received):.0f} ms, started in {1000 * (now - run.starting):.0f} ms)")
        if run.assigned_at:
            log.info("task %s running: %.0f ms after it was assigned, %s",
                     run.task.id, 1000 * (time.time() - run.assigned_at), steps)
        else:
            log.info("task %s running: %s", run.task.id, steps)

    async def _supervise(self, run: _Run) -> None:
        c = run.container
        assert c is not None
        stopper: asyncio.Task[None] | None = None
        try:
            while not c.exited.is_set():
                if run.task.desired_state > TaskState.RUNNING and stopper is None:
                    stopper = asyncio.get_running_loop().create_task(self._stop(run))
                waiter = asyncio.ensure_future(self._wait_change(run))
                exited = asyncio.ensure_future(c.exited.wait())
                try:
                    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    exited.cancel()
            if stopper is not None:
                await stopper
        finally:
            if stopper is not None and not stopper.done():
                stopper.cancel()
        if run.state.is_terminal:
            return
        code = c.exit_code if c.exit_code is not None else 0
        if stopper is not None or run.task.desired_state > TaskState.RUNNING:
            self._report(run, TaskState.SHUTDOWN, "shutdown", exit_code=code)
        elif code == 0:
            self._report(run, TaskState.COMPLETE, "finished", exit_code=0)
        else:
            self._report(run, TaskState.FAILED, "started", err=f"task: non-zero exit ({code})", exit_code=code)

    async def _stop(self, run: _Run) -> None:
        c = run.container
        assert c is not None
        cs = run.task.spec.container
        grace = (cs.stop_grace_period if cs.stop_grace_period else 10 * SECOND) / SECOND
        sig = base.stop_signal(cs)
        if self.mesh_drain is not None and run.task.networks and c.running:
            await self.mesh_drain(run.task.id)  # no new connection reaches a stopping task
        with contextlib.suppress(ProcessLookupError):
            await base.stop(self.executor, c, grace, sig)

    async def _remove(self, task_id: str) -> None:
        """The task left this node: stop it (with its grace period) if running, then delete its container."""
        run = self._runs.get(task_id)
        if run is None or run.removed:
            return
        run.removed = True
        c = run.container
        if c is not None and c.running:
            await self._stop(run)
        if run.controller is not None:
            run.controller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.controller
        if c is not None:
            await self.executor.remove(c)
        self._runs.pop(task_id, None)

    def _secret_files(self, task: Task) -> list[SecretFile]:
        files = []
        for ref in task.spec.container.secrets:
            data = self._secrets.get(ref.secret_id)
            if data is None:
                raise TaskRejected(f"secret {ref.secret_name or ref.secret_id} not found")
            files.append(
                SecretFile(
                    name=ref.file_name or ref.secret_name,
                    data=data,
                    uid=int(ref.uid or 0),
                    gid=int(ref.gid or 0),
                    mode=ref.mode if ref.mode else 0o444,
                )
            )
        return files

    # ---------------------------------------------------------------------------------- for the API

    def tasks(self) -> dict[str, TaskState]:
        """Task id -> the last state this node reported."""
        return {tid: r.state for tid, r in self._runs.items()}

    def _containers(self) -> list[Container]:
        return [r.container for r in self._runs.values() if r.container is not None and not r.removed]

    def containers(self, all: bool = False) -> list[dict[str, Any]]:
        """``GET /containers/json`` entries for this node's task containers, newest first."""
        now = time.time()
        out = [summary(c, now) for c in self._containers() if all or c.running]
        return sorted(out, key=lambda d: -d["Created"])

    def find(self, ref: str) -> Container:
        """A container by full/short id (unique prefix), name (``/``-prefixed or not) or task id."""
        name = ref.lstrip("/")
        matches = []
        for c in self._containers():
            if c.id == ref or c.task.id == ref or c.task.annotations.name == name:
                return c
            if len(ref) >= 1 and c.id.startswith(ref):
                matches.append(c)
        if len(matches) == 1:
            return matches[0]
        raise NoSuchContainer(ref)

    def logs(self, ref: str, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]:
        """A task's log entries (``docker logs`` / ``docker service logs``; the API frames them)."""
        return self.executor.logs(self.find(ref), query)

    async def kill(self, ref: str, sig: int = 9) -> None:
        """``docker kill``: the task then fails with ``task: non-zero exit (128+sig)`` if it dies."""
        c = self.find(ref)
        await self.executor.signal(c, sig)

    async def remove_container(self, ref: str, force: bool = False) -> None:
        """``docker rm [-f]`` of a task container: a running one is killed (the task fails with 137)."""
        c = self.find(ref)
        if c.running:
            if not force:
                raise RuntimeError(
                    f"cannot remove container \"/{c.task.annotations.name}\": container is running: "
                    "stop the container before removing or force remove"
                )
            with contextlib.suppress(ProcessLookupError):
                await self.executor.signal(c, 9)
            await c.exited.wait()
            run = self._runs.get(c.task.id)
            if run is not None and run.controller is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(run.controller), 5)
        await self.executor.remove(c)
        run = self._runs.get(c.task.id)
        if run is not None:
            run.removed = True
