"""Committing orchestration decisions, and waiting for the store to reach a condition.

SwarmKit's orchestrators read and write inside one store transaction. Here a changeset is built from
current reads and then committed through Raft, which takes time; ``Writer`` serialises this leader's
orchestration writes (build + commit under one lock, so two of our own coroutines never decide from the
same stale view, e.g. both filling one slot) and rebuilds from fresh reads when the store rejects the
changeset because another loop (scheduler, dispatcher) changed an object first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from agents.manager.loop import Committer, commit_tx
from agents.state.errors import StoreError
from agents.state.objects import StoreObject
from agents.state.store import Store
from agents.state.tx import Tx
from agents.state.watch import Event, WatchClosed, WatchQueue

log = logging.getLogger(__name__)

R = TypeVar("R")


class Writer:
    """Build-and-commit with retries. ``build(tx)`` must not await and must return non-None; ``update``
    returns its result once committed, or None when the change could not be committed."""

    def __init__(self, store: Store, committer: Committer, retries: int = 5, backoff: float = 0.01) -> None:
        self.store = store
        self.committer = committer
        self.retries = retries
        self.backoff = backoff
        self._lock = asyncio.Lock()

    async def update(self, build: Callable[[Tx], R]) -> R | None:
        for attempt in range(self.retries):
            async with self._lock:
                try:
                    with self.store.batch() as tx:
                        out = build(tx)
                except StoreError as e:  # a pending write clashed with the local store: re-read and retry
                    log.debug("orchestration change not built: %s", e)
                else:
                    result = await commit_tx(self.committer, tx)
                    if result is None or result.ok:
                        return out
            await asyncio.sleep(self.backoff * (attempt + 1))
        log.warning("orchestration change abandoned after %d attempts", self.retries)
        return None


async def get_within(q: WatchQueue, timeout: float | None) -> Event | None:
    """``q.get()`` giving up after ``timeout`` seconds (None then). Uses ``asyncio.timeout``: Python 3.11's
    ``asyncio.wait_for`` can swallow a cancellation racing with the result, leaving a stopped loop running."""
    try:
        async with asyncio.timeout(timeout):
            return await q.get()
    except TimeoutError:
        return None


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """``event.wait()`` for at most ``timeout`` seconds; whether it was set (see ``get_within``)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def wait_for(
    store: Store,
    predicate: Callable[[], bool],
    kinds: Iterable[type[StoreObject]],
    timeout: float | None = None,
) -> bool:
    """Wait until ``predicate()`` holds, re-checking after each change to ``kinds``; False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    kinds = list(kinds)
    q = store.watch_queue(kinds)
    try:
        while not predicate():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                if await get_within(q, remaining) is None:
                    return predicate()
                q.drain()
            except WatchClosed:  # fell behind (or a snapshot was restored): re-check with a fresh queue
                q = store.watch_queue(kinds)
        return True
    finally:
        q.close()
