"""What the worker needs from an executor, and the container handle both executors hand out.

The worker drives one task through ``create`` (ACCEPTED..READY; `TaskRejected` -> REJECTED) and
``start`` (STARTING -> RUNNING; `StartFailed` -> FAILED), then awaits ``Container.exited`` and maps
``exit_code`` to COMPLETE/FAILED, or calls `stop` for a desired SHUTDOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as _signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from agents.state.objects import ContainerSpec, Task
from agents.worker.executor.logs import LogEntry
from agents.worker.images import catalog


class TaskRejected(Exception):
    """The task cannot be prepared (unknown image, missing secret...): Docker's text, task REJECTED."""


class StartFailed(Exception):
    """The container could not be started: task FAILED with this text."""


@dataclass(frozen=True)
class SecretFile:
    """A secret as the task sees it: ``/run/secrets/<name>``."""

    name: str
    data: bytes
    uid: int = 0
    gid: int = 0
    mode: int = 0o444


@dataclass(frozen=True)
class LogQuery:
    """Which of a task's log entries to read (``docker logs`` options): one value the worker, its
    executors and the API hand along instead of six keywords each."""

    follow: bool = False
    """Keep yielding new entries until the task exits (not with ``until``)."""
    tail: int | None = None
    """The last N entries of what is already there; None = all."""
    since: float | None = None
    """Epoch seconds: entries from then on (None or 0 = from the start)."""
    until: float | None = None
    """Epoch seconds: entries before then (None or 0 = no bound)."""
    stdout: bool = True
    stderr: bool = True


@dataclass(eq=False)
class Container:
    """The runtime side of one task (what ``docker ps``/``inspect`` show)."""

    id: str
    task: Task
    image: str
    argv: list[str]
    created: float
    state: str = "created"
    """created | running | exited"""
    pid: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    addresses: list[str] = field(default_factory=list)
    hostname: str = ""
    error: str = ""
    adopted: bool = False
    """Found running by a restarted agent (not started by this process)."""
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == "running"


def parse_signal(name: str | int | None, default: int = _signal.SIGTERM) -> int:
    """``SIGQUIT``/``QUIT``/``3`` -> 3 (Docker's StopSignal spellings); ``default`` when empty."""
    if name is None or name == "":
        return default
    if isinstance(name, int):
        return name
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(_signal.Signals[text])
    except KeyError:
        raise ValueError(f"invalid signal: {name}") from None


def stop_signal(cs: ContainerSpec, override: str | int | None = None) -> int:
    """The signal a stop sends first: ``override`` (``docker stop --signal``), else the container's
    StopSignal, else its image's; SIGTERM when none is set or the name is no signal."""
    name = override or cs.stop_signal
    if not name:
        with contextlib.suppress(catalog.ImageError):
            name = catalog.resolve(cs.image).stop_signal
    try:
        return parse_signal(name)
    except ValueError:
        return _signal.SIGTERM


class Executor(Protocol):
    async def create(self, task: Task, secrets: list[SecretFile]) -> Container: ...

    async def start(self, c: Container) -> None: ...

    async def signal(self, c: Container, sig: int) -> None: ...

    async def remove(self, c: Container) -> None: ...

    async def restore(self) -> list[Container]:
        """Containers found on the node when the agent starts (running ones adopted)."""
        ...

    async def prewarm(self) -> None:
        """Get ready to start tasks before the first one arrives (the process executor starts its
        launcher), so a service's first tasks do not wait for it; failures surface at the first start."""
        ...

    def logs(self, c: Container, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]: ...

    async def close(self) -> None: ...


async def stop(executor: Executor, c: Container, grace_s: float, sig: int = _signal.SIGTERM) -> None:
    """Docker's stop: ``sig``, then SIGKILL once ``grace_s`` has passed; returns when the task exited."""
    if c.state != "running":
        return
    await executor.signal(c, sig)
    try:
        async with asyncio.timeout(max(0.0, grace_s)):
            await c.exited.wait()
        return
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        await executor.signal(c, _signal.SIGKILL)
    await c.exited.wait()
