"""What a leader knows about each follower's log, and how fast it may send to it.

States (as in the Raft thesis / etcd's tracker):

* PROBE     -- we do not know where the follower's log matches ours; send one APPEND per heartbeat
  interval and back off on rejection (using the follower's ``reject_hint``);
* REPLICATE -- the follower is in sync; stream APPENDs optimistically, at most ``max_inflight``
  unacknowledged messages at a time (pipelining with flow control);
* SNAPSHOT  -- the follower needs entries we compacted away; one snapshot is in flight, nothing else
  is sent until it is acknowledged or reported failed.
"""

from __future__ import annotations

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "inflights",
        "learner",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "read_ack",
        "recent_active",
        "sent_commit",
        "snap_rounds",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snap_rounds = 0  # heartbeat rounds spent in SNAPSHOT (recovery if no report ever comes)
        self.recent_active = False
        self.inflights: deque[int] = deque()  # last index of each unacknowledged APPEND, ascending
        self.max_inflight = max_inflight
        self.learner = learner
        self.sent_commit = 0  # commit index carried by the last APPEND sent (to skip needless empty ones)
        self.read_ack = 0  # highest read-index round this peer acknowledged (leader's heartbeat seq)

    def _reset(self, state: str) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snap_rounds = 0
        self.inflights.clear()

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset(SNAPSHOT)
        self.pending_snapshot = index

    def maybe_update(self, index: int) -> bool:
        """An APPEND up to ``index`` was accepted; False when the ack is stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An APPEND with previous index ``rejected`` was refused; False when the refusal is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def sent(self, last_index: int, n_entries: int) -> None:
        """Account for an APPEND just sent whose entries end at ``last_index``."""
        if self.state == REPLICATE:
            if n_entries:
                self.next = last_index + 1
                self.inflights.append(last_index)
        elif self.state == PROBE:
            self.probe_sent = True

    def free_le(self, index: int) -> None:
        q = self.inflights
        while q and q[0] <= index:
            q.popleft()
