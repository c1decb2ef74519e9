"""An executor for in-process API tests, which run their nodes in the test's own network namespace.

The real process executor gives each task a network namespace, bridges, veths and cgroups on the node;
run in the host namespace that would change the host itself, so these tests use this stand-in instead:
shell images (alpine, busybox) run their command as a plain child process whose output becomes the
task's log; server images (nginx, …) are simulated as running without binding anything. Exit codes
follow Docker's (SIGKILL -> 137). `close()` kills whatever is still running. The real executor is tested
on netns labs (tests/integration/test_executor.py, test_api_services_cli.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator

from agents.state.objects import Task
from agents.worker.executor.base import Container, LogQuery, SecretFile, TaskRejected
from agents.worker.executor.logs import LogEntry, rfc3339_nano
from agents.worker.images import catalog


class FakeExecutor:
    def __init__(self) -> None:
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._logs: dict[str, list[LogEntry]] = {}
        self._readers: set[asyncio.Task[None]] = set()

    async def create(self, task: Task, secrets: list[SecretFile]) -> Container:
        spec = task.spec.container
        try:
            image = catalog.resolve(spec.image)
        except catalog.ImageError as e:
            raise TaskRejected(str(e)) from None
        argv = catalog.build_argv(image, None, list(spec.command) or None, list(spec.args) or None)
        return Container(id=uuid.uuid4().hex + uuid.uuid4().hex, task=task, image=spec.image, argv=argv,
                         created=time.time())

    async def start(self, c: Container) -> None:
        self._logs[c.id] = []
        c.state, c.started_at = "running", time.time()
        if c.argv and c.argv[0] in ("sh", "/bin/sh", "sleep", "echo", "ping"):
            proc = await asyncio.create_subprocess_exec(
                *c.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            self._procs[c.id] = proc
            c.pid = proc.pid
            reader = asyncio.get_running_loop().create_task(self._pump(c, proc))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)

    async def _pump(self, c: Container, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            self._logs[c.id].append(LogEntry("stdout", rfc3339_nano(time.time_ns()), line))
        code = await proc.wait()
        self._exit(c, 128 - code if code < 0 else code)

    def _exit(self, c: Container, code: int) -> None:
        if c.state == "exited":
            return
        c.state, c.exit_code, c.finished_at = "exited", code, time.time()
        c.exited.set()

    async def signal(self, c: Container, sig: int) -> None:
        proc = self._procs.get(c.id)
        if proc is not None and proc.returncode is None:
            proc.send_signal(sig)
            return
        if c.state == "running":  # a simulated server: SIGTERM exits 0, SIGKILL 137
            self._exit(c, 137 if sig == signal.SIGKILL else 0)

    async def remove(self, c: Container) -> None:
        proc = self._procs.pop(c.id, None)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def prewarm(self) -> None:
        pass

    async def restore(self) -> list[Container]:
        return []

    async def logs(self, c: Container, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]:
        entries = list(self._logs.get(c.id, []))
        if query.tail is not None:
            entries = entries[-query.tail:] if query.tail > 0 else []
        for e in entries:
            if (e.stream == "stdout" and query.stdout) or (e.stream == "stderr" and query.stderr):
                yield e

    async def close(self) -> None:
        for proc in list(self._procs.values()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs.clear()
