"""Helpers shared by the worker's integration tests, whichever executor they drive (process or Docker)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TypeVar

from agents.worker.agent import Worker
from agents.worker.executor.logs import LogEntry

T = TypeVar("T")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def arun(fn: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    """Run a test's async body on a fresh loop; a hang fails the test after ``timeout`` seconds."""

    async def main() -> T:
        async with asyncio.timeout(timeout):
            return await fn()

    return asyncio.run(main())


async def shutdown(worker: Worker) -> None:
    """Shut down the worker's tasks, then stop it: nothing of the test keeps running."""
    await worker.shutdown_tasks()
    await worker.stop()


async def collect(it: AsyncIterable[LogEntry]) -> list[LogEntry]:
    return [e async for e in it]


def pairs(entries: list[LogEntry]) -> list[tuple[str, bytes]]:
    """Log entries as (stream, data): what the tests compare (times vary)."""
    return [(e.stream, e.data) for e in entries]
