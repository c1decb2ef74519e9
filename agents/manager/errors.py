"""Errors the manager raises with Docker's words; the API turns them into Docker's HTTP answers."""

from __future__ import annotations

NO_LEADER_MSG = (
    "rpc error: code = Unknown desc = The swarm does not have a leader. "
    "It's possible that too few managers are online. Make sure more than half of the managers are online."
)
NOT_MANAGER_MSG = (
    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
    "Please run this command on a manager node or promote the current node to a manager."
)
NOT_IN_SWARM_MSG = (
    "This node is not part of a swarm"
)
ALREADY_IN_SWARM_MSG = (
    "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one."
)


class ManagerError(Exception):
    """Base: carries the HTTP status the Docker API answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoLeader(ManagerError):
    """Quorum is lost (or an election is under way): nothing that needs the leader can be done."""

    status = 503

    def __init__(self, message: str = NO_LEADER_MSG) -> None:
        super().__init__(message)


class NotLeader(ManagerError):
    """This manager is a follower; `leader_addr` is where the request should go instead."""

    status = 503

    def __init__(self, leader_addr: str | None) -> None:
        super().__init__(f"this manager is not the leader (leader: {leader_addr or 'unknown'})")
        self.leader_addr = leader_addr


class NotAManager(ManagerError):
    status = 503

    def __init__(self) -> None:
        super().__init__(NOT_MANAGER_MSG)


class NotInSwarm(ManagerError):
    status = 503

    def __init__(self) -> None:
        super().__init__(NOT_IN_SWARM_MSG)


class AlreadyInSwarm(ManagerError):
    status = 503

    def __init__(self) -> None:
        super().__init__(ALREADY_IN_SWARM_MSG)


class InvalidArgument(ManagerError):
    """Docker wraps these as `rpc error: code = InvalidArgument desc = …` (HTTP 400)."""

    status = 400

    def __init__(self, desc: str) -> None:
        super().__init__(f"rpc error: code = InvalidArgument desc = {desc}")


class FailedPrecondition(ManagerError):
    status = 400

    def __init__(self, desc: str) -> None:
        super().__init__(f"rpc error: code = FailedPrecondition desc = {desc}")


class Conflict(ManagerError):
    status = 409
