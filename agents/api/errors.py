"""Errors a handler raises to answer with Docker's JSON error body ``{"message": ...}``.

The error middleware turns any :class:`ApiError` into that body with its status; anything else a
handler raises is a bug (logged, answered 500). Handlers must validate input and raise these instead
of letting bad input blow up deeper down.
"""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error with Docker's message text; ``status`` is the response code."""

    status: int = 500

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class InvalidParameter(ApiError):
    """400: bad input (Docker's errdefs.InvalidParameter)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class NotFound(ApiError):
    """404: no such object (Docker's errdefs.NotFound)."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class Conflict(ApiError):
    """409: the request conflicts with the current state (Docker's errdefs.Conflict)."""

    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class Unavailable(ApiError):
    """503: e.g. "This node is not a swarm manager..." (Docker's errdefs.Unavailable)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class NotImplementedYet(ApiError):
    """501: an endpoint the agent knows about but does not serve."""

    def __init__(self, message: str) -> None:
        super().__init__(501, message)
