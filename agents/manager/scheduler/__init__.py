"""The scheduler (SwarmKit's ``manager/scheduler``): assigns pending tasks to nodes.

* ``constraints`` placement constraint parsing/matching with Docker's syntax and errors
                  (``parse_constraints`` is what the API uses to validate services).
* ``nodeinfo``    per-node task counts, host ports and free resources.
* ``filters``     the filter pipeline and Docker's "no suitable node (…)" explanations.
* ``placement``   spread over placement preferences and nodes with heaps.
* ``scheduler``   the leader-only control loop, batching decisions into few changesets.
"""

from agents.manager.scheduler.constraints import Constraint, parse_constraints
from agents.manager.scheduler.scheduler import Scheduler

__all__ = ["Constraint", "Scheduler", "parse_constraints"]
