"""The leader's orchestration loops, after SwarmKit's ``manager/orchestrator``.

* ``replicated``  ``ReplicatedOrchestrator``: slots 1..replicas per replicated service.
* ``globalmode``  ``GlobalOrchestrator``: one task per eligible node for global services.
* ``restart``     ``RestartSupervisor``: replaces failed/finished tasks per restart policy (owned by an
                  orchestrator, not a loop of its own).
* ``reaper``      ``TaskReaper``: task history retention and deletion of removed/orphaned tasks.
* ``loops``       ``orchestration_loops(store, committer)``: the three loops a leader starts.

The rolling-update supervisor lives in ``agents.manager.updater`` (each orchestrator owns one). This
package's ``__init__`` imports nothing so ``updater`` and the orchestrators can import each other's
helper modules without an import cycle.
"""
