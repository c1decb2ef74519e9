"""The leader's side: rebuild the mesh table from the store shortly after anything relevant changes
(coalesced: one rebuild per ``delay_s`` however many events), and push the delta to every node
session. A node that connects gets the last published table in full, then the deltas.

Every message carries the publisher's ``stream`` (new each time this manager starts leading) and a
``gen`` counting its messages. Nodes answer each message with a ``mesh_ack`` once its rules are in
place; when every session has acknowledged a generation, the publisher tells all nodes with
``mesh_applied``. That is what lets a worker stop a task only once no node sends it new connections
(`agents.mesh.agent.MeshAgent.drain`), however late a busy node applies the table.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from agents.mesh.table import MeshTable, build

log = logging.getLogger(__name__)

RELEVANT = frozenset({"task", "service", "network", "node"})


class MeshPublisher:
    """``members`` lists the live sessions (any hashable id each): the ones whose acknowledgements count."""

    def __init__(self, store: Any, broadcast: Callable[[dict[str, Any]], None], delay_s: float = 0.02,
                 members: Callable[[], Iterable[str]] | None = None) -> None:
        self.store = store
        self.broadcast = broadcast
        self.delay_s = delay_s
        self.members = members
        self.published: MeshTable | None = None
        self.messages = 0
        self.stream = secrets.token_hex(6)
        self.gen = 0
        """Generation of the last table published in ``stream``."""
        self.applied_everywhere = 0
        """The last generation every session acknowledged (announced as ``mesh_applied``)."""
        self._acked: dict[str, int] = {}
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
            self.gen += 1
            self.messages += 1
            self.broadcast(self._stamp(msg))

    def full_message(self) -> dict[str, Any]:
        """For a node that just connected: the table the others have (built now if never published)."""
        if self.published is None:
            self.published = build(self.store)
            self.gen += 1
        return self._stamp(self.published.full_message())

    def _stamp(self, msg: dict[str, Any]) -> dict[str, Any]:
        msg["stream"] = self.stream
        msg["gen"] = self.gen
        return msg

    # ----------------------------------------------------------------------------------- acknowledgements

    def ack(self, member: str, stream: Any, gen: Any) -> None:
        """A node has programmed generation ``gen``: announce it once every live session has."""
        if stream != self.stream or not isinstance(gen, int) or isinstance(gen, bool):
            return  # a previous leader's stream, or garbage
        if gen > self._acked.get(member, 0):
            self._acked[member] = min(gen, self.gen)
        self.check()

    def check(self) -> None:
        """Announce the newest generation every live session has acknowledged, when it advanced (also
        called when a session leaves: the slowest node may have been that one)."""
        if self.members is None:
            return
        live = set(self.members())
        self._acked = {m: g for m, g in self._acked.items() if m in live}
        if not live:
            return
        low = min(self._acked.get(m, 0) for m in live)
        if low > self.applied_everywhere:
            self.applied_everywhere = low
            self.broadcast({"type": "mesh_applied", "stream": self.stream, "gen": low})

    def reset(self) -> None:
        """Leadership ended or the store was replaced: the next session starts from a fresh table."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.published = None
        self.stream = secrets.token_hex(6)
        self.gen = 0
        self.applied_everywhere = 0
        self._acked = {}
