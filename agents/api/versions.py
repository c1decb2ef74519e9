"""API version parsing, comparison and the negotiation rule (1.24 <= requested <= 1.45).

Handlers that change shape per version compare with :func:`less_than` on
``httputil.api_version(request)``, as moby's handlers do with ``versions.LessThan``.
"""

from __future__ import annotations

import re

from agents.api.errors import InvalidParameter
from agents.version import API_VERSION, MIN_API_VERSION

_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def parse(version: str) -> tuple[int, ...]:
    """"1.45" -> (1, 45); ValueError for anything that is not dot-separated integers."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"malformed API version {version!r}")
    return tuple(int(part) for part in version.split("."))


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 like moby's versions.compare (missing parts count as 0: "1" == "1.0")."""
    pa, pb = parse(a), parse(b)
    width = max(len(pa), len(pb))
    pa += (0,) * (width - len(pa))
    pb += (0,) * (width - len(pb))
    return (pa > pb) - (pa < pb)


def less_than(a: str, b: str) -> bool:
    return compare(a, b) < 0


def greater_than(a: str, b: str) -> bool:
    return compare(a, b) > 0


def negotiate(requested: str | None) -> str:
    """The version a request is served at; InvalidParameter (400) with dockerd's wording if unsupported.

    ``requested`` is the ``NN`` of a ``/vNN/...`` path, or None for an unprefixed path (served at the
    current version). A malformed value (e.g. ``1..45``) is rejected rather than guessed at.
    """
    if requested is None:
        return API_VERSION
    try:
        parse(requested)
    except ValueError:
        raise InvalidParameter(
            f'malformed API version "{requested}" in the request path: expected /v<major>.<minor>/ '
            f"(e.g. /v{API_VERSION}/)"
        ) from None
    if less_than(requested, MIN_API_VERSION):
        raise InvalidParameter(
            f"client version {requested} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version"
        )
    if greater_than(requested, API_VERSION):
        raise InvalidParameter(
            f"client version {requested} is too new. Maximum supported API version is {API_VERSION}"
        )
    return requested
