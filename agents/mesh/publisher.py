"""The leader's side: rebuild the mesh table from the store shortly after anything relevant changes
(coalesced: one rebuild per ``delay_s`` however many events), and push the delta to every node
session. A node that connects gets the last published table in full, then the deltas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from agents.mesh.table import MeshTable, build

log = logging.getLogger(__name__)

RELEVANT = frozenset({"task", "service", "network", "node"})


class MeshPublisher:
    def __init__(self, store: Any, broadcast: Callable[[dict[str, Any]], None], delay_s: float = 0.02) -> None:
        self.store = store
        self.broadcast = broadcast
        self.delay_s = delay_s
        self.published: MeshTable | None = None
        self.messages = 0
        self._handle: asyncio.TimerHandle | None = None

    def on_events(self, kinds: Iterable[str]) -> None:
        if self._handle is None and any(k in RELEVANT for k in kinds):
            self._handle = asyncio.get_running_loop().call_later(self.delay_s, self.publish)

    def publish(self) -> None:
        self._handle = None
        try:
            new = build(self.store)
        except Exception:
            log.exception("mesh: could not build the table")
            return
        old = self.published
        self.published = new
        msg = old.delta_message(new) if old is not None else new.full_message()
        if msg is not None:
            self.messages += 1
            self.broadcast(msg)

    def full_message(self) -> dict[str, Any]:
        """For a node that just connected: the table the others have (built now if never published)."""
        if self.published is None:
            self.published = build(self.store)
        return self.published.full_message()

    def reset(self) -> None:
        """Leadership ended or the store was replaced: the next session starts from a fresh table."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.published = None
