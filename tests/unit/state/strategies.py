"""Hypothesis strategies for every state dataclass, derived from the type hints (so new fields are covered)."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from hypothesis import strategies as st

_INT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_TEXT = st.text(max_size=12)


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    if tp is str:
        return _TEXT
    if tp is int:
        return _INT
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is bool:
        return st.booleans()
    if tp is bytes:
        return st.binary(max_size=16)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if dataclasses.is_dataclass(tp):
        return for_class(tp)  # type: ignore[arg-type]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in args if a is not type(None)]
        return st.none() | st.deferred(lambda: for_type(inner))
    if origin is list:
        return st.lists(st.deferred(lambda: for_type(args[0])), max_size=3)
    if origin is dict:
        return st.dictionaries(_TEXT, st.deferred(lambda: for_type(args[1])), max_size=3)
    raise TypeError(tp)


def for_class(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: for_type(hints[f.name]) for f in dataclasses.fields(cls) if f.init}
    return st.builds(cls, **fields)
