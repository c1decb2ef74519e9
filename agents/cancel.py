"""Stopping a background task without losing the stopper's own cancellation.

The usual ``task.cancel(); with suppress(CancelledError): await task`` has a flaw: if the task doing the
stopping is itself cancelled while it waits (a node stopping its manager while the node is being shut
down), the CancelledError it receives is swallowed too, and it runs on as if it had never been
cancelled -- a role watch that keeps polling, a stop() that never returns. `cancel_and_wait` passes
that cancellation on.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended; re-raise if the caller was cancelled meanwhile.

    An error the task ended with (instead of being cancelled) is raised here, as `await task` would.
    """
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise  # our own cancellation, not (only) the task's
