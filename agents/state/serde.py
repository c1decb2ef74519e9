"""Generated to_dict / from_dict / to_list / from_list / copy functions for the state dataclasses.

``to_dict`` is the plain, self-describing form; ``to_list`` is the compact positional wire form used by
changesets and snapshots (fields in declaration order, nested objects as lists too: about 3x smaller and
faster to decode than repeating every key for every task). New fields must be appended (trailing
fields missing from an older list take their defaults); renaming or reordering fields breaks the wire.

Why generated: a changeset creating 10,000 tasks must decode and apply in well under 200 ms, and control
loops copy objects on every update. Reflection over ``dataclasses.fields`` per call costs several times
more than straight-line code, so each class gets three small functions compiled once (lazily, on first
use) from its type hints, the way attrs/cattrs do it.

Supported field types: ``str int float bool bytes``, ``StrEnum``/``IntEnum``, nested dataclasses, ``X | None``,
``list[X]`` and ``dict[str, X]``. ``from_dict`` checks primitive types and raises ``ValueError`` on anything
malformed (garbage must never reach the store); missing keys take the field default, unknown keys are
ignored, so old snapshots keep loading after fields are added. Where a nested dataclass is expected, an
instance of it is accepted as is (not copied): the changeset decoder shares one decoded task spec among
the many tasks that carry identical ones.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, cast

_PRIMS: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool", bytes: "bytes"}


class _Codec:
    __slots__ = ("copy", "from_dict", "from_list", "to_dict", "to_list")

    def __init__(self, ns_dict: dict[str, Any], ns_list: dict[str, Any]) -> None:
        self.to_dict: Callable[[Any], dict[str, Any]] = ns_dict["to_dict"]
        self.from_dict: Callable[[Any], Any] = ns_dict["from_dict"]
        self.copy: Callable[[Any], Any] = ns_dict["copy"]
        self.to_list: Callable[[Any], list[Any]] = ns_list["to_list"]
        self.from_list: Callable[[Any], Any] = ns_list["from_list"]


_codecs: dict[type, _Codec] = {}


def _bad(path: str, value: object) -> Any:
    raise ValueError(f"invalid value for {path}: {type(value).__name__}")


def _check_float(path: str, value: object) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    return _bad(path, value)  # type: ignore[no-any-return]


def _check_enum(members: dict[Any, Any], path: str, value: object) -> Any:
    try:
        return members[value]
    except (KeyError, TypeError):
        raise ValueError(f"invalid value for {path}: {value!r}") from None


class _Gen:
    """Builds the expressions for one class; helpers are bound into the generated module's namespace.

    An expression that needs its source twice binds it to a fresh temporary with ``:=`` inside the test of
    a conditional expression, which Python evaluates before either branch.
    """

    def __init__(self, cls: type, form: str) -> None:
        self.cls = cls
        self.form = form
        """"dict" (keyed by field name) or "list" (positional, the compact wire form)."""
        self.ns: dict[str, Any] = {"_bad": _bad, "_chkf": _check_float, "_chke": _check_enum}
        self.n = 0
        self.slow = False

    def bind(self, value: object) -> str:
        self.n += 1
        name = f"_h{self.n}"
        self.ns[name] = value
        return name

    def tmp(self) -> str:
        self.n += 1
        return f"_t{self.n}"

    def to_expr(self, tp: Any, src: str) -> str:
        if tp in _PRIMS or tp is Any:
            return src
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return f"{src}._value_"
        if dataclasses.is_dataclass(tp):
            return f"{self.bind(getattr(codec(cast(type, tp)), 'to_' + self.form))}({src})"
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            inner, t = _optional_inner(tp, args), self.tmp()
            return f"(None if ({t} := {src}) is None else {self.to_expr(inner, t)})"
        if origin is list:
            (item,) = args
            if item in _PRIMS:
                return f"list({src})"
            x = self.tmp()
            return f"[{self.to_expr(item, x)} for {x} in {src}]"
        if origin is dict:
            _, val = args
            if val in _PRIMS:
                return f"dict({src})"
            k, v = self.tmp(), self.tmp()
            return f"{{{k}: {self.to_expr(val, v)} for {k}, {v} in {src}.items()}}"
        raise TypeError(f"serde: unsupported type {tp!r} in {self.cls.__name__}")

    def from_expr(self, tp: Any, src: str, path: str) -> str:
        p = repr(path)
        if tp is Any:
            return src
        if tp is float:
            t = self.tmp()
            return f"({t} if type({t} := {src}) is float else _chkf({p}, {t}))"
        if tp in _PRIMS:
            t = self.tmp()
            return f"({t} if type({t} := {src}) is {_PRIMS[tp]} else _bad({p}, {t}))"
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            # Fast path: plain lookup; a KeyError sends from_dict to its slow path, which reports it.
            if self.slow:
                return f"_chke({self.bind(tp._value2member_map_)}, {p}, {src})"
            return f"{self.bind(tp._value2member_map_)}[{src}]"
        if dataclasses.is_dataclass(tp):
            # An already-built instance is taken as is (shared): decoders use it to intern task specs.
            t = self.tmp()
            return f"({t} if type({t} := {src}) is {self.bind(tp)} else {self.bind(getattr(codec(cast(type, tp)), 'from_' + self.form))}({t}))"
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            inner, t = _optional_inner(tp, args), self.tmp()
            return f"(None if ({t} := {src}) is None else {self.from_expr(inner, t, path)})"
        if origin is list:
            (item,) = args
            t, x = self.tmp(), self.tmp()
            conv = self.from_expr(item, x, path + "[]")
            # Empty containers (the common case) skip the comprehension, which costs a function frame.
            return f"(([{conv} for {x} in {t}] if {t} else []) if type({t} := {src}) is list else _bad({p}, {t}))"
        if origin is dict:
            key, val = args
            if key is not str:
                raise TypeError(f"serde: dict keys must be str in {self.cls.__name__}")
            t, k, v = self.tmp(), self.tmp(), self.tmp()
            conv = self.from_expr(val, v, path + "{}")
            return (
                f"(({{({k} if type({k}) is str else _bad({p}, {k})): {conv} for {k}, {v} in {t}.items()}}"
                f" if {t} else {{}}) if type({t} := {src}) is dict else _bad({p}, {t}))"
            )
        raise TypeError(f"serde: unsupported type {tp!r} in {self.cls.__name__}")

    def copy_expr(self, tp: Any, src: str) -> str:
        if tp in _PRIMS or tp is Any or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            return src
        if dataclasses.is_dataclass(tp):
            return f"{self.bind(codec(cast(type, tp)).copy)}({src})"
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            inner, t = _optional_inner(tp, args), self.tmp()
            return f"(None if ({t} := {src}) is None else {self.copy_expr(inner, t)})"
        if origin is list:
            (item,) = args
            if item in _PRIMS or (isinstance(item, type) and issubclass(item, enum.Enum)):
                return f"list({src})"
            x = self.tmp()
            return f"[{self.copy_expr(item, x)} for {x} in {src}]"
        if origin is dict:
            _, val = args
            if val in _PRIMS:
                return f"dict({src})"
            k, v = self.tmp(), self.tmp()
            return f"{{{k}: {self.copy_expr(val, v)} for {k}, {v} in {src}.items()}}"
        raise TypeError(f"serde: unsupported type {tp!r} in {self.cls.__name__}")


def _optional_inner(tp: Any, args: tuple[Any, ...]) -> Any:
    rest = [a for a in args if a is not type(None)]
    if len(rest) != 1 or len(args) != 2:
        raise TypeError(f"serde: only `X | None` unions are supported, got {tp!r}")
    return rest[0]


def list_encoder_with_hook(cls: type, hooked: str) -> Callable[[Any, Callable[[Any], Any]], list[Any]]:
    """``to_list`` variant whose field ``hooked`` is encoded by a caller-supplied function (e.g. to intern
    it) instead of being converted: ``enc(obj, hook)``."""
    hints = typing.get_type_hints(cls)
    g = _Gen(cls, "list")
    items = []
    for f in dataclasses.fields(cls):
        if f.init:
            items.append(
                f"_hook(_o.{f.name})" if f.name == hooked else g.to_expr(hints[f.name], "_o." + f.name)
            )
    if f"_hook(_o.{hooked})" not in items:
        raise TypeError(f"serde: {cls.__name__} has no field {hooked}")
    exec(
        compile(
            "def enc(_o, _hook):\n    return [" + ", ".join(items) + "]",
            f"<serde {cls.__name__} hook>",
            "exec",
        ),
        g.ns,
    )
    out: Callable[[Any, Callable[[Any], Any]], list[Any]] = g.ns["enc"]
    return out


def _compile(cls: type) -> _Codec:
    return _Codec(_compile_form(cls, "dict"), _compile_form(cls, "list"))


def _compile_form(cls: type, form: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    g = _Gen(cls, form)
    name = cls.__name__
    g.ns["_cls"] = cls
    is_list = form == "list"

    to_items, from_args, copy_args, slow_lines = [], [], [], []
    for i, f in enumerate(fields):
        tp = hints[f.name]
        value = g.to_expr(tp, "_o." + f.name)
        to_items.append(value if is_list else f"{f.name!r}: {value}")
        src = f"_d[{i}]" if is_list else f"_d[{f.name!r}]"
        from_args.append(g.from_expr(tp, src, f"{name}.{f.name}"))
        copy_args.append(g.copy_expr(tp, "_o." + f.name))
        g.ns[f"_default{i}"] = _default_factory(f)
        g.slow = True
        conv = g.from_expr(tp, src, f"{name}.{f.name}")
        g.slow = False
        absent = f"len(_d) <= {i}" if is_list else f"{f.name!r} not in _d"
        slow_lines.append(f"    _a{i} = _default{i}() if {absent} else {conv}")

    container, missing = ("list", "IndexError") if is_list else ("dict", "KeyError")
    src_lines = [
        f"def to_{form}(_o):",
        ("    return [" + ", ".join(to_items) + "]")
        if is_list
        else ("    return {" + ", ".join(to_items) + "}"),
        "def copy(_o):",
        "    return _cls(" + ", ".join(copy_args) + ")",
        "def _from_slow(_d):",
        *slow_lines,
        "    return _cls(" + ", ".join(f"_a{i}" for i in range(len(fields))) + ")",
        f"def from_{form}(_d):",
        f"    if type(_d) is not {container}:",
        f"        return _bad({name!r}, _d)",
        "    try:",
        "        return _cls(" + ", ".join(from_args) + ")",
        f"    except ({missing}, KeyError, TypeError, AttributeError):",
        "        pass",
        "    try:",
        "        return _from_slow(_d)",
        f"    except ({missing}, KeyError, TypeError, AttributeError) as _e:",
        f"        raise ValueError(f'invalid {name}: {{_e!r}}') from None",
    ]
    code = "\n".join(src_lines)
    exec(compile(code, f"<serde {cls.__module__}.{name} {form}>", "exec"), g.ns)
    return g.ns


def _default_factory(f: dataclasses.Field[Any]) -> Callable[[], Any]:
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    raise TypeError(f"serde: field {f.name} has no default")


def codec(cls: type) -> _Codec:
    c = _codecs.get(cls)
    if c is None:
        c = _codecs[cls] = _compile(cls)
    return c


def warm(*classes: type) -> None:
    """Compile the codecs of ``classes`` (and of every dataclass nested in them) now rather than at first
    use: a Task's take ~60 ms of CPU, which would otherwise delay the first assignments a node decodes."""
    for cls in classes:
        codec(cls)
