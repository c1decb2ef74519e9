"""Worker logic against an in-memory executor: assignments (full/incremental), transitions, removal,
adoption after a restart, exit codes and the docker-ps view."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from agents.state.objects import Task, TaskState
from agents.worker.agent import Worker
from agents.worker.executor.base import Container, LogQuery, SecretFile, TaskRejected
from agents.worker.executor.logs import LogEntry
from agents.worker.views import human_duration, status_text

from .fakes import FakeSession, assign, make_task

T = TypeVar("T")


class FakeExecutor:
    """Containers in memory: ``start`` makes them run until signalled (exit 128+sig)."""

    def __init__(self, restored: list[Container] | None = None) -> None:
        self.created: list[Container] = []
        self.removed: list[str] = []
        self.secrets: dict[str, list[SecretFile]] = {}
        self.signals: list[tuple[str, int]] = []
        self.ignore_term = False
        self._restored = restored or []

    async def create(self, task: Task, secrets: list[SecretFile]) -> Container:
        if task.spec.container.image == "nosuch":
            raise TaskRejected("No such image: nosuch:latest")
        c = Container(id=f"{len(self.created):064x}", task=task, image=task.spec.container.image, argv=["x"],
                      created=time.time())
        self.created.append(c)
        self.secrets[task.id] = secrets
        return c

    async def start(self, c: Container) -> None:
        c.state, c.pid, c.started_at = "running", 1000 + len(self.created), time.time()

    def exit(self, c: Container, code: int) -> None:
        c.state, c.exit_code, c.finished_at = "exited", code, time.time()
        c.exited.set()

    async def signal(self, c: Container, sig: int) -> None:
        if c.state != "running":
            raise ProcessLookupError
        self.signals.append((c.task.id, sig))
        if sig == signal.SIGTERM and self.ignore_term:
            return
        self.exit(c, 128 + sig)

    async def remove(self, c: Container) -> None:
        self.removed.append(c.task.id)

    async def prewarm(self) -> None:
        pass

    async def restore(self) -> list[Container]:
        return self._restored

    def logs(self, c: Container, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]:
        async def gen() -> AsyncIterator[LogEntry]:
            yield LogEntry("stdout", "t", b"x\n")

        return gen()

    async def close(self) -> None:
        pass


def arun(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        async with asyncio.timeout(10):
            return await fn()

    return asyncio.run(main())


def test_transitions_and_exit_codes() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/nonexistent", s, ex)
        await w.apply(assign([make_task("a"), make_task("b", slot=2), make_task("c", slot=3)], full=True))
        for t in "abc":
            await s.wait(t, "running")
        assert s.states("a") == ["accepted", "preparing", "ready", "starting", "running"]
        by_id = {c.task.id: c for c in ex.created}
        ex.exit(by_id["a"], 0)
        ex.exit(by_id["b"], 2)
        ex.exit(by_id["c"], 137)
        ua, ub, uc = (await s.wait("a", "complete"), await s.wait("b", "failed"), await s.wait("c", "failed"))
        assert (ua["message"], ua["exit_code"]) == ("finished", 0)
        assert (ub["err"], ub["exit_code"]) == ("task: non-zero exit (2)", 2)
        assert uc["err"] == "task: non-zero exit (137)"
        assert ua["container_id"] == by_id["a"].id and ua["pid"] == by_id["a"].pid
        assert len(w.start_latencies) == 3

    arun(body)


def test_rejected_and_missing_secret() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/x", s, ex)
        await w.apply(assign([make_task("r", image="nosuch"), make_task("m", secrets=[("sid9", "pw")])]))
        assert (await s.wait("r", "rejected"))["err"] == "No such image: nosuch:latest"
        assert (await s.wait("m", "rejected"))["err"] == "secret pw not found"

    arun(body)


def test_secrets_are_handed_to_the_executor_by_file_name() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/x", s, ex)
        await w.apply(assign([make_task("t", secrets=[("sid1", "db_pw")])], secrets={"sid1": b"hunter2"}))
        await s.wait("t", "running")
        assert ex.secrets["t"] == [SecretFile("db_pw", b"hunter2", 0, 0, 0o444)]

    arun(body)


def test_desired_shutdown_stops_with_grace_then_kill() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        ex.ignore_term = True
        w = Worker("/x", s, ex)
        await w.apply(assign([make_task("t", grace_s=0.2, stop_signal="SIGQUIT")]))
        await s.wait("t", "running")
        ex.ignore_term = False
        await w.apply(assign([make_task("t", grace_s=0.2, stop_signal="SIGQUIT", desired=TaskState.SHUTDOWN)]))
        u = await s.wait("t", "shutdown")
        assert ex.signals == [("t", signal.SIGQUIT)] and u["exit_code"] == 128 + signal.SIGQUIT

        ex.ignore_term = True
        await w.apply(assign([make_task("u", grace_s=0.2)]))
        await s.wait("u", "running")
        t0 = time.monotonic()
        await w.apply(assign([make_task("u", grace_s=0.2, desired=TaskState.SHUTDOWN)]))
        u = await s.wait("u", "shutdown")
        assert ex.signals[-2:] == [("u", signal.SIGTERM), ("u", signal.SIGKILL)]
        assert u["exit_code"] == 137 and time.monotonic() - t0 >= 0.2

    arun(body)


def test_shutdown_before_start_and_terminal_tasks_are_not_run() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/x", s, ex)
        await w.apply(assign([
            make_task("sd", desired=TaskState.SHUTDOWN),
            make_task("done", status=TaskState.COMPLETE),
        ], full=True))
        await s.wait("sd", "shutdown")
        await asyncio.sleep(0.05)
        assert s.states("done") == [] and ex.created == []

    arun(body)


def test_ready_waits_for_desired_running() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/x", s, ex)
        await w.apply(assign([make_task("t", desired=TaskState.READY)]))
        await s.wait("t", "ready")
        await asyncio.sleep(0.05)
        assert s.latest["t"]["state"] == "ready"
        await w.apply(assign([make_task("t")]))
        await s.wait("t", "running")

    arun(body)


def test_full_set_removes_unlisted_and_incremental_removes_named() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/x", s, ex)
        await w.apply(assign([make_task("a"), make_task("b", slot=2), make_task("c", slot=3)], full=True))
        for t in "abc":
            await s.wait(t, "running")
        await w.apply(assign([make_task("a", status=TaskState.RUNNING), make_task("c", status=TaskState.RUNNING)],
                             full=True))
        await w.apply(assign([], removed=["c"]))
        for _ in range(100):
            if sorted(ex.removed) == ["b", "c"]:
                break
            await asyncio.sleep(0.01)
        assert sorted(ex.removed) == ["b", "c"]
        assert [c["Names"] for c in w.containers()] == [["/web.1.a"]]
        assert w.containers()[0]["Ports"] == []  # alpine exposes nothing; nginx's 80/tcp: test_views_ports
        assert len(ex.created) == 3  # re-sending "a" did not start a second container

    arun(body)


def test_adopted_tasks_are_reported_running_not_restarted() -> None:
    async def body() -> None:
        t = make_task("a", status=TaskState.RUNNING)
        c = Container(id="f" * 64, task=t, image="alpine", argv=["sleep"], created=time.time(), state="running",
                      pid=4242, started_at=time.time(), adopted=True)
        gone = Container(id="e" * 64, task=make_task("b", slot=2), image="alpine", argv=["x"], created=time.time(),
                         state="exited", exit_code=0, started_at=1, finished_at=2)
        gone.exited.set()
        s, ex = FakeSession(), FakeExecutor(restored=[c, gone])
        w = Worker("/x", s, ex)
        await w.start()
        assert (await s.wait("a", "running"))["pid"] == 4242
        await w.apply(assign([t], full=True))
        await asyncio.sleep(0.05)
        assert ex.created == [] and s.states("a") == ["running"]
        assert ex.removed == ["b"] and s.states("b") == []  # not in the manager's set any more: no report
        ex.exit(c, 1)
        assert (await s.wait("a", "failed"))["exit_code"] == 1

    arun(body)


def test_task_found_dead_after_a_power_cut_ends_as_the_manager_now_wants() -> None:
    """A node that lost power comes back with its tasks dead: one the manager replaced meanwhile (desired
    Shutdown) is reported Shutdown, as dockerd does; one still wanted running failed with its exit code."""

    async def body() -> None:
        def dead(tid: str, slot: int) -> Container:
            c = Container(id=tid * 64, task=make_task(tid, slot=slot, status=TaskState.RUNNING), image="alpine",
                          argv=["x"], created=time.time(), state="exited", exit_code=137, started_at=1,
                          finished_at=2)
            c.exited.set()
            return c

        s, ex = FakeSession(), FakeExecutor(restored=[dead("a", 1), dead("b", 2)])
        w = Worker("/x", s, ex)
        await w.start()
        await asyncio.sleep(0.05)
        assert s.states("a") == [] and s.states("b") == []  # nothing said before the manager is heard
        await w.apply(assign([make_task("a", status=TaskState.RUNNING, desired=TaskState.SHUTDOWN),
                              make_task("b", slot=2, status=TaskState.RUNNING)], full=True))
        assert (await s.wait("a", "shutdown"))["err"] == ""
        assert (await s.wait("b", "failed"))["err"] == "task: non-zero exit (137)"
        assert ex.created == []

    arun(body)


def test_running_task_without_container_fails() -> None:
    async def body() -> None:
        s, ex = FakeSession(), FakeExecutor()
        w = Worker("/x", s, ex)
        await w.apply(assign([make_task("lost", status=TaskState.RUNNING)], full=True))
        assert (await s.wait("lost", "failed"))["err"] == "task: container not found"

    arun(body)


def test_human_duration_and_status() -> None:
    assert [human_duration(x) for x in (0.5, 1, 5, 60, 150, 3600, 7200, 3 * 86400)] == [
        "Less than a second", "1 second", "5 seconds", "About a minute", "2 minutes", "About an hour", "2 hours",
        "3 days",
    ]
    c = Container(id="a" * 64, task=make_task("t"), image="alpine", argv=["x"], created=0, state="running",
                  started_at=100)
    assert status_text(c, now=105) == "Up 5 seconds"
    c.state, c.exit_code, c.finished_at = "exited", 137, 110
    assert status_text(c, now=113) == "Exited (137) 3 seconds ago"


def test_views_ports_are_the_images_exposed_ports() -> None:
    """`docker ps` shows a task container's EXPOSEd ports (``80/tcp``): published ones belong to the mesh."""
    from agents.worker.views import exposed_ports

    assert exposed_ports("nginx:1.22@sha256:" + "0" * 64) == [{"PrivatePort": 80, "Type": "tcp"}]
    assert exposed_ports("alpine") == [] and exposed_ports("nosuch/image") == []
