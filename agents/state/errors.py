"""Store errors. Messages are SwarmKit's store texts so the API can relay them unchanged."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: a changeset was rejected or a lookup failed."""


class SequenceConflict(StoreError):
    """An update/delete carried a version that is no longer current (someone else wrote first)."""

    def __init__(self, message: str = "update out of sequence") -> None:
        super().__init__(message)


class AlreadyExists(StoreError):
    def __init__(self, message: str = "object already exists") -> None:
        super().__init__(message)


class NameConflict(AlreadyExists):
    def __init__(
        self, message: str = "rpc error: code = AlreadyExists desc = name conflicts with an existing object"
    ) -> None:
        super().__init__(message)


class NotFound(StoreError):
    def __init__(self, message: str = "object does not exist") -> None:
        super().__init__(message)


class Ambiguous(StoreError):
    """A reference (id prefix or name) matched several objects."""


class InvalidTransition(StoreError):
    """An update would move a task's observed state backwards."""


class CorruptChangeset(StoreError):
    """The entry could not be decoded or is structurally invalid."""
