"""A control loop that keeps derived state from watch events and works in debounced batches.

The scheduler and the allocator share this shape: rebuild their in-memory view from the store, then
apply watch events one by one (cheap, incremental), and when an event makes work possible, wait a short
window for more to arrive so that one pass (and few Raft round trips) handles it all. If the watch queue
overflows ("fell behind") the view is rebuilt from the store; nothing is kept that a new leader could
not rebuild the same way.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Sequence

from agents.manager.loop import Committer, ControlLoop
from agents.state.objects import StoreObject
from agents.state.store import Store
from agents.state.watch import Event, WatchClosed, WatchQueue

log = logging.getLogger(__name__)


class BatchingLoop(ControlLoop):
    kinds: Sequence[type[StoreObject]] = ()

    def __init__(
        self,
        store: Store,
        committer: Committer,
        *,
        batch_window: float = 0.05,
        max_latency: float = 1.0,
        queue_size: int = 1_000_000,
    ) -> None:
        super().__init__(store, committer)
        self.batch_window = batch_window
        """Wait this long after the last event before a pass (more work may be on its way)."""
        self.max_latency = max_latency
        """…but never delay a pass longer than this while events keep coming."""
        self.queue_size = queue_size
        self._queue: WatchQueue | None = None
        self.dirty = False
        """A pass is due."""
        self.passes = 0

    @abstractmethod
    def rebuild(self) -> None:
        """Rebuild the in-memory view from the store."""

    @abstractmethod
    def handle(self, ev: Event) -> bool:
        """Apply one event to the view; True if a pass is due."""

    @abstractmethod
    async def tick(self) -> None:
        """One pass: decide and commit. May set ``dirty`` to ask for another pass."""

    async def run(self) -> None:
        while True:
            q = self.store.watch_queue(kinds=self.kinds, maxsize=self.queue_size)
            self._queue = q
            try:
                self.rebuild()
                await self._serve(q)
            except WatchClosed as e:
                if not e.fell_behind:
                    return
                log.warning("%s fell behind the store; rebuilding", self.name)
            finally:
                q.close()
                self._queue = None

    async def _serve(self, q: WatchQueue) -> None:
        self.dirty = True
        first = True
        while True:
            if self.dirty:
                if not first:
                    await self._collect(q)
                first = False
                self.dirty = False
                self.passes += 1
                await self.tick()
                continue
            ev = await q.get()
            self.dirty |= self.handle(ev)
            for ev in q.drain():
                self.dirty |= self.handle(ev)

    async def _collect(self, q: WatchQueue) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            await asyncio.sleep(self.batch_window)
            events = q.drain()
            for ev in events:
                self.handle(ev)
            if not events or loop.time() - start >= self.max_latency:
                return

    def resync(self) -> None:
        """After a rejected changeset: drop queued events (the store already reflects them), rebuild,
        and ask for another pass."""
        if self._queue is not None:
            try:
                self._queue.drain()
            except WatchClosed:
                pass  # the run loop notices the closed queue on its next read
        self.rebuild()
        self.dirty = True
