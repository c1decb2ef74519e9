"""The core's in-memory view of the replicated log.

Why a separate module: the log's index arithmetic (snapshot offset, persisted/applied cursors) is where
off-by-one bugs live; keeping it small and free of protocol logic makes it easy to reason about.

Layout: entries ``snap_index+1 .. last_index`` are held in ``entries``; everything at or below
``snap_index`` has been compacted into a snapshot whose last entry had term ``snap_term``.

Cursors (all monotone except where a conflicting tail is truncated):

* ``persist_idx`` -- entries up to here have been handed to the runner in a ``Ready`` to persist;
* ``committed``   -- known committed (quorum-replicated) index;
* ``applying``    -- committed entries up to here have been handed to the runner to apply;
* ``applied``     -- the runner confirmed (``advance``) it applied up to here.
"""

from __future__ import annotations

from agents.raft.types import Entry, Snapshot


class RaftLog:
    __slots__ = (
        "applied",
        "applying",
        "committed",
        "entries",
        "pending_snapshot",
        "persist_idx",
        "snap_index",
        "snap_term",
    )

    def __init__(self, snap_index: int = 0, snap_term: int = 0, entries: list[Entry] | None = None) -> None:
        self.snap_index = snap_index
        self.snap_term = snap_term
        self.entries: list[Entry] = entries if entries is not None else []
        self.persist_idx = self.last_index()
        self.committed = snap_index
        self.applying = snap_index
        self.applied = snap_index
        self.pending_snapshot: Snapshot | None = None

    # -- queries -----------------------------------------------------------------------------------
    def first_index(self) -> int:
        return self.snap_index + 1

    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        off = index - self.snap_index
        if off == 0:
            return self.snap_term
        if 0 < off <= len(self.entries):
            return self.entries[off - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        t = self.term(index)
        return t is not None and t == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's election restriction: is a candidate's log at least as up to date as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo .. hi-1``; the caller guarantees ``lo > snap_index``."""
        off = self.snap_index + 1
        return self.entries[lo - off : hi - off]

    def entry(self, index: int) -> Entry | None:
        off = index - self.snap_index
        if 0 < off <= len(self.entries):
            return self.entries[off - 1]
        return None

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest index <= ``index`` whose term is <= ``term`` (fast log backtracking).

        Stops at the snapshot boundary: below it terms are unknown, and the caller then falls back to
        a snapshot.
        """
        last = self.last_index()
        if index > last:
            index = last
        while index > self.snap_index:
            t = self.entries[index - self.snap_index - 1].term
            if t <= term:
                break
            index -= 1
        return index

    # -- mutation ----------------------------------------------------------------------------------
    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry of ``ents`` that is not already in our log (0: all present)."""
        last = ents[-1]
        if self.match_term(last.index, last.term):
            return 0  # log matching: the last one matches, so all do (duplicate / stale message)
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0  # pragma: no cover - unreachable given the first check

    def truncate_and_append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``ents``, first dropping any of our entries at or after ``ents[0].index``."""
        first = ents[0].index
        off = first - self.snap_index - 1
        if off < len(self.entries):
            del self.entries[off:]
            if self.persist_idx >= first:
                self.persist_idx = first - 1
        self.entries.extend(ents)

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            self.committed = index
            return True
        return False

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (install-snapshot from a leader)."""
        idx = snap.meta.index
        self.snap_index = idx
        self.snap_term = snap.meta.term
        self.entries = []
        self.persist_idx = idx
        self.committed = idx
        self.applying = idx
        self.pending_snapshot = snap

    def compact(self, index: int, term: int) -> None:
        """Drop entries ``<= index``; the caller checked ``snap_index < index <= applied``."""
        del self.entries[: index - self.snap_index]
        self.snap_index = index
        self.snap_term = term

    def truncate_after(self, index: int) -> None:
        """Drop entries after ``index`` (force-new-cluster drops the uncommitted tail)."""
        del self.entries[index - self.snap_index :]
        if self.persist_idx > index:
            self.persist_idx = index

    # -- Ready helpers -----------------------------------------------------------------------------
    def has_unpersisted(self) -> bool:
        return self.persist_idx < self.snap_index + len(self.entries)

    def take_unpersisted(self) -> list[Entry]:
        last = self.last_index()
        if self.persist_idx >= last:
            return []
        ents = self.entries[self.persist_idx - self.snap_index :]
        self.persist_idx = last
        return ents

    def has_unapplied(self) -> bool:
        return self.applying < min(self.committed, self.persist_idx)

    def take_unapplied(self) -> list[Entry]:
        """Committed entries not yet handed out; only ones handed out for persisting (maybe in the same
        Ready, which the runner persists before it applies)."""
        hi = min(self.committed, self.persist_idx)
        if self.applying >= hi:
            return []
        lo = self.applying
        ents = self.entries[lo - self.snap_index : hi - self.snap_index]
        self.applying = hi
        return ents
