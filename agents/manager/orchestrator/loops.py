"""The orchestration loops a leader starts (and stops when it loses leadership)."""

from __future__ import annotations

from agents.manager.loop import Committer, ControlLoop
from agents.manager.orchestrator.globalmode import GlobalOrchestrator
from agents.manager.orchestrator.reaper import TaskReaper
from agents.manager.orchestrator.replicated import ReplicatedOrchestrator
from agents.state.store import Store


def orchestration_loops(store: Store, committer: Committer) -> list[ControlLoop]:
    """Replicated and global orchestrators (each with its restart and update supervisors) and the task
    reaper. For ``Manager``: ``loop_factories=[lambda m: l for l in ...]`` or one factory per class, e.g.
    ``lambda m: ReplicatedOrchestrator(m.store, m.committer)``."""
    return [
        ReplicatedOrchestrator(store, committer),
        GlobalOrchestrator(store, committer),
        TaskReaper(store, committer),
    ]
