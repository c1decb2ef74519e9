"""The check kinds: each is a function registered under a dotted name with a pydantic model of its params.

A check reads state and answers `Outcome(ok, message, observed)`; it never waits (polling is the
caller's job, see `polling.py`) and never decides points, hints or failure texts (those are the lab's).

A kind that must watch the lab *while* a step happens (a client loop counting failed requests during a
rolling update) registers a `begin` hook: the session calls it when the check's step starts and hands
the check what it returned (a `Watcher`, stopped when the step ends). Such a kind is `step_only`: it can
only be judged by `labctl run` (`at: step`), never afterwards by `labctl grade`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from labctl.exercises.checks.context import CheckContext


class Params(BaseModel):
    """Base of every kind's params: strict, so a typo in a lab is an error at load time."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str  # what was found, in a sentence a student can act on
    observed: Any = None  # the raw value(s) compared, for reports


class Watcher(Protocol):
    """Something a `begin` hook started (a thread, a loop) that must end with the step."""

    def stop(self) -> None: ...


class CheckError(Exception):
    """State could not be read (node down, no manager, missing service): the check fails with this text."""


P = TypeVar("P", bound=Params)
CheckFn = Callable[["CheckContext", Any], Outcome]
BeginFn = Callable[["CheckContext", Any], Watcher]


@dataclass(frozen=True)
class CheckKind:
    name: str
    params: type[Params]
    fn: CheckFn
    doc: str
    begin: BeginFn | None = None  # started when the check's step starts (see the module doc)
    step_only: bool = False  # judged only during a run: needs `at: step`


_KINDS: dict[str, CheckKind] = {}


def check(name: str, params: type[P], *, begin: Callable[[CheckContext, P], Watcher] | None = None,
          step_only: bool = False) -> Callable[[Callable[[CheckContext, P], Outcome]], Callable[[CheckContext, P], Outcome]]:
    """Register a check kind: `@check("service.replicas", ReplicasParams)`; `begin` and `step_only` for
    kinds that watch a step as it happens."""

    def register(fn: Callable[[CheckContext, P], Outcome]) -> Callable[[CheckContext, P], Outcome]:
        if name in _KINDS:
            raise RuntimeError(f"check kind {name!r} registered twice")
        _KINDS[name] = CheckKind(name, params, fn, (fn.__doc__ or "").strip().split("\n")[0], begin, step_only)
        return fn

    return register


def get_kind(name: str) -> CheckKind:
    _load_builtin()
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown check kind {name!r} (kinds: {', '.join(sorted(_KINDS))})") from None


def kinds() -> dict[str, CheckKind]:
    _load_builtin()
    return dict(_KINDS)


def _load_builtin() -> None:
    from labctl.exercises.checks import builtin  # noqa: F401  (importing registers the kinds)
