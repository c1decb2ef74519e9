"""A stand-in executor that runs any container command as a plain host process (for API tests of
``docker run``'s attach, ``-i``/``-t`` and ``docker exec``, in the test's own namespaces).

Like `fakeexec.FakeExecutor` (which it extends) nothing of the node's network is touched; unlike it, every
command runs: the catalog maps it to the host's binary (or the image's Python program) as the process
executor does, with the task's environment and working directory, stdin from /dev/null and both output
streams into the log. The real executor is tested on netns labs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from agents.worker.executor.base import Container, LogQuery, StartFailed
from agents.worker.executor.logs import LogEntry
from agents.worker.images import catalog

from .fakeexec import FakeExecutor


class HostProcessExecutor(FakeExecutor):
    async def start(self, c: Container) -> None:
        cs = c.task.spec.container
        spec = catalog.resolve(cs.image)
        argv = catalog.build_argv(spec, cs.command or None, None, cs.args)
        try:
            host = catalog.host_argv(spec, argv)
        except catalog.ImageError as e:
            c.state, c.exit_code, c.finished_at, c.error = "exited", 127, time.time(), str(e)
            c.exited.set()
            raise StartFailed(str(e)) from None
        env = spec.env_dict()
        env["HOSTNAME"] = cs.hostname or c.id[:12]
        env.setdefault("HOME", "/root")
        for item in cs.env:
            key, sep, value = item.partition("=")
            if sep:
                env[key] = value
        self._logs[c.id] = []
        proc = await asyncio.create_subprocess_exec(
            *host, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=cs.dir or spec.working_dir or "/",
            start_new_session=True,
        )
        c.hostname = env["HOSTNAME"]
        c.state, c.started_at, c.pid = "running", time.time(), proc.pid
        self._procs[c.id] = proc
        reader = asyncio.get_running_loop().create_task(self._pump(c, proc))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def logs(self, c: Container, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]:
        """Like the json-file reader: ``follow`` keeps yielding new lines until the container exited."""
        entries = self._logs.get(c.id, [])
        start = max(0, len(entries) - query.tail) if query.tail is not None else 0
        i = start
        while True:
            entries = self._logs.get(c.id, [])
            while i < len(entries):
                e = entries[i]
                i += 1
                if (e.stream == "stdout" and query.stdout) or (e.stream == "stderr" and query.stderr):
                    yield e
            if not query.follow or (c.state == "exited" and i >= len(self._logs.get(c.id, []))):
                return
            await asyncio.sleep(0.02)

    def pid_alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
