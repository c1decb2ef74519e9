"""Docker's reference resolution (``docker service inspect web``, ``… 3fa``): full id, then name, then id prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from agents.state.errors import Ambiguous, NotFound
from agents.state.objects import StoreObject

Obj = TypeVar("Obj", bound=StoreObject)


def resolve(
    kind: str,
    ref: str,
    get: Callable[[str], Obj | None],
    by_name: Callable[[str], list[Obj]],
    items: Callable[[], Iterable[tuple[str, Obj]]],
) -> Obj:
    """Resolve ``ref`` as SwarmKit/moby do; raise ``NotFound`` or ``Ambiguous`` with Docker's wording."""
    if ref:
        obj = get(ref)
        if obj is not None:
            return obj
        named = by_name(ref)
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise Ambiguous(f"{kind} {ref} is ambiguous ({len(named)} matches found)")
        matches = [o for oid, o in items() if oid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Ambiguous(f"{kind} {ref} is ambiguous ({len(matches)} matches found)")
    raise NotFound(f"{kind} {ref} not found")
