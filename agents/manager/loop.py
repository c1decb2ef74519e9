"""What the leader's control loops share: a way to commit changesets, and a run/stop shape.

Control loops (orchestrators, scheduler, allocator, dispatcher bookkeeping, updater, reaper) run on the
leader only. They read the store, build a changeset with ``store.batch()``, and hand it to a
``Committer``. On a manager the committer proposes through Raft and returns once the entry is applied
locally; in unit tests ``LocalCommitter`` applies at once, through the same encode/decode path. Loops
react to the store's watch events, so they keep no state that a new leader could not rebuild from the
store: leadership can move at any time and the next leader starts fresh loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Protocol

from agents.cancel import cancel_and_wait
from agents.state.changeset import Changeset
from agents.state.store import ApplyResult, Store
from agents.state.tx import Tx

log = logging.getLogger(__name__)


class Committer(Protocol):
    async def commit(self, changeset: Changeset) -> ApplyResult:
        """Replicate and apply `changeset`; the result says whether the store accepted it. Raises if this
        manager cannot commit (not the leader, no quorum) — loops then stop; a new leader restarts them."""
        ...


class LocalCommitter:
    """Commits straight into a local store (tests and single-process tools)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def commit(self, changeset: Changeset) -> ApplyResult:
        return self.store.commit_local(changeset)


@contextlib.contextmanager
def building(store: Store) -> Iterator[Tx]:
    """``with building(store) as tx:`` — the same as ``store.batch()``, named for readability in loops."""
    with store.batch() as tx:
        yield tx


async def commit_tx(committer: Committer, tx: Tx) -> ApplyResult | None:
    """Commit what a finished transaction recorded; None when it recorded nothing."""
    if tx.changeset is None or not tx.changeset.ops:
        return None
    result = await committer.commit(tx.changeset)
    if not result.ok:
        log.info("changeset rejected: %s", result.error)
    return result


class ControlLoop(ABC):
    """A leader-only loop: ``start()`` runs it as a task, ``stop()`` cancels and waits for it."""

    name = "loop"

    def __init__(self, store: Store, committer: Committer) -> None:
        self.store = store
        self.committer = committer
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def run(self) -> None:
        """Work until cancelled."""

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._guarded(), name=self.name)

    async def _guarded(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("control loop %s stopped on an error", self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            await cancel_and_wait(task)  # a stopper cancelled meanwhile stays cancelled

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()
