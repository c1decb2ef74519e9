"""A tiny synchronous in-memory cluster for unit tests of the Raft core.

It follows the runner's Ready protocol (persist, send, apply, advance) with a perfect disk; tests choose
which links are cut and when messages are delivered, so every scenario is scripted, not timed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from agents.raft.core import Config, RaftCore
from agents.raft.types import ConfState, Entry, HardState, Message, MessageType, Ready, Role, Snapshot


class Stored:
    """What a node persisted (enough to restart it)."""

    def __init__(self) -> None:
        self.hs = HardState()
        self.snap: Snapshot | None = None
        self.entries: list[Entry] = []

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            idx, term = rd.snapshot.meta.index, rd.snapshot.meta.term
            keep = [e for e in self.entries if e.index > idx]
            has = any(e.index == idx and e.term == term for e in self.entries)
            self.entries = keep if has else []
            self.snap = rd.snapshot
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            self.hs = rd.hard_state


class MemNet:
    def __init__(self, ids: Iterable[int], seed: int = 1, **cfg: object) -> None:
        self.ids = list(ids)
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.cores: dict[int, RaftCore] = {}
        self.stored: dict[int, Stored] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.queue: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.readies: dict[int, list[Ready]] = {}
        self.sent: list[Message] = []  # every message that left a node, for assertions
        boot = ConfState(voters=tuple(self.ids))
        for i in self.ids:
            self.add(i, conf=boot)

    def config(self, nid: int) -> Config:
        return Config(id=nid, **self.cfg)  # type: ignore[arg-type]

    def add(self, nid: int, conf: ConfState | None = None, **kw: object) -> RaftCore:
        core = RaftCore(self.config(nid), random.Random(self.rng.random()), conf=conf, **kw)  # type: ignore[arg-type]
        self.cores[nid] = core
        self.stored.setdefault(nid, Stored())
        self.applied.setdefault(nid, [])
        self.readies.setdefault(nid, [])
        if nid not in self.ids:
            self.ids.append(nid)
        self.process(nid)
        return core

    def restart(self, nid: int, conf: ConfState | None = None) -> RaftCore:
        st = self.stored[nid]
        core = RaftCore(
            self.config(nid),
            random.Random(self.rng.random()),
            hard_state=st.hs,
            snapshot=st.snap,
            entries=list(st.entries),
            conf=conf,
        )
        self.cores[nid] = core
        self.down.discard(nid)
        return core

    def process(self, nid: int) -> None:
        core = self.cores[nid]
        while nid not in self.down and core.has_ready():
            rd = core.ready()
            self.readies[nid].append(rd)
            self.stored[nid].save(rd)
            for m in rd.messages:
                self.sent.append(m)
                if (m.frm, m.to) not in self.cut and m.to not in self.down:
                    self.queue.append(m)
            self.applied[nid].extend(rd.committed)
            core.advance(rd)

    def process_all(self) -> None:
        for i in list(self.cores):
            self.process(i)

    def deliver(self, keep: Callable[[Message], bool] | None = None, max_rounds: int = 1000) -> None:
        """Deliver queued messages (and what they trigger) until the network is quiet."""
        for _ in range(max_rounds):
            self.process_all()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if m.to in self.down or m.to not in self.cores or (m.frm, m.to) in self.cut:
                    continue
                if keep is not None and not keep(m):
                    continue
                self.cores[m.to].step(m)
        raise AssertionError("network never became quiet")

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.cores[nid].tick()
        self.process(nid)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i, c in self.cores.items():
                if i not in self.down:
                    c.tick()
            self.deliver()

    def campaign(self, nid: int) -> None:
        """Tick only ``nid`` until it starts an election, then let the election run."""
        core = self.cores[nid]
        for _ in range(10 * core._cfg.election_ticks):
            core.tick()
            if core.role in (Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER):
                break
        self.deliver()

    def leader(self) -> int:
        leaders = [i for i, c in self.cores.items() if i not in self.down and c.role == Role.LEADER]
        assert len(leaders) <= 1, leaders
        return leaders[0] if leaders else 0

    def isolate(self, nid: int) -> None:
        for j in self.ids:
            if j != nid:
                self.cut.add((nid, j))
                self.cut.add((j, nid))

    def heal(self) -> None:
        self.cut.clear()

    def propose(self, nid: int, data: bytes) -> int:
        idx = self.cores[nid].propose(data)
        self.deliver()
        return idx

    def types_sent(self, typ: MessageType) -> list[Message]:
        return [m for m in self.sent if m.type == typ]
