"""Request/response helpers every router uses (the agent's counterpart of moby's ``httputils``).

They exist so bad input becomes a 400 with a clear message at the edge, never an exception deep in
a handler: read JSON bodies with :func:`read_json_object`, pull typed fields with
:func:`require_field` / :func:`optional_field`, query parameters with :func:`query_bool`,
:func:`query_int` and :func:`query_filters`, and answer with :func:`json_response`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar, overload

from aiohttp import web

from agents.api.errors import InvalidParameter

T = TypeVar("T")

API_VERSION_KEY: Any
"""Request key under which the version middleware stores the negotiated API version."""
try:
    API_VERSION_KEY = web.RequestKey("labagent_api_version", str)  # type: ignore[attr-defined,unused-ignore]
except AttributeError:  # aiohttp < 3.13 has no typed request keys
    API_VERSION_KEY = "labagent.api_version"


def api_version(request: web.Request) -> str:
    """The API version of this request ("1.45" when the path had no ``/vX.Y`` prefix)."""
    from agents.version import API_VERSION

    return str(request.get(API_VERSION_KEY, API_VERSION))


def json_dumps(data: Any) -> str:
    """Encode like Go's ``json.Encoder`` with HTML escaping off: compact, trailing newline."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A Docker-style JSON response (``Content-Type: application/json``)."""
    # body= (not text=) so the Content-Type is exactly dockerd's, without "; charset=utf-8".
    return web.Response(
        body=json_dumps(data).encode(), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, message: str) -> web.Response:
    """Docker's error body: ``{"message": ...}``."""
    return json_response({"message": message}, status=status)


# --- JSON request bodies -------------------------------------------------------------------------

_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def json_type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_content_type(request: web.Request, body: bytes) -> None:
    """Docker's CheckForJSON: no Content-Type is fine only without a body; otherwise it must be JSON."""
    raw = request.headers.get("Content-Type", "")
    if not raw and not body:
        return
    mimetype = raw.split(";", 1)[0].strip().lower()
    if not mimetype or "/" not in mimetype:
        raise InvalidParameter(f"malformed Content-Type header ({raw}): mime: no media type")
    if mimetype != "application/json":
        raise InvalidParameter(f"unsupported Content-Type header ({raw}): must be 'application/json'")


async def read_json(request: web.Request) -> Any:
    """Decode the request body as JSON; None when the body is empty (as dockerd treats it)."""
    body = await request.read()
    _check_content_type(request, body)
    if not body.strip():
        return None
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidParameter(f"invalid JSON: body is not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # NaN / Infinity
        raise InvalidParameter(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise InvalidParameter("invalid JSON: nested too deeply") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Decode a body that must be a JSON object; an empty body gives ``{}`` like Go's zero value."""
    data = await read_json(request)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid JSON: expected an object, got {json_type_name(data)}")
    return data


def expect_type(value: Any, kind: type[T] | tuple[type, ...], path: str) -> T:
    """Check a decoded JSON value's type (``bool`` is never accepted as a number); 400 otherwise."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and int not in kinds:
        kinds = (*kinds, int)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        wanted = " or ".join(_JSON_TYPE_NAMES.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))
        raise InvalidParameter(f"invalid JSON: {path} must be {_article(wanted)}, got {json_type_name(value)}")
    return value  # type: ignore[no-any-return]


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def require_field(obj: Mapping[str, Any], key: str, kind: type[T], path: str = "") -> T:
    """``obj[key]`` checked to be of ``kind``; 400 if missing, null or of the wrong type."""
    where = _join(path, key)
    if obj.get(key) is None:
        raise InvalidParameter(f"invalid JSON: {where} is required")
    return expect_type(obj[key], kind, where)


@overload
def optional_field(obj: Mapping[str, Any], key: str, kind: type[T], default: T, path: str = "") -> T: ...


@overload
def optional_field(
    obj: Mapping[str, Any], key: str, kind: type[T], default: None = None, path: str = ""
) -> T | None: ...


def optional_field(
    obj: Mapping[str, Any], key: str, kind: type[T], default: T | None = None, path: str = ""
) -> T | None:
    """``obj[key]`` checked to be of ``kind``, or ``default`` when missing or null."""
    value = obj.get(key)
    if value is None:
        return default
    return expect_type(value, kind, _join(path, key))


# --- query parameters ----------------------------------------------------------------------------


def query_bool(request: web.Request, key: str, default: bool = False) -> bool:
    """Docker's BoolValueOrDefault: absent -> default; "", 0, no, false, none -> False; else True."""
    if key not in request.query:
        return default
    value = request.query[key].strip().lower()
    return value not in ("", "0", "no", "false", "none")


def query_int(request: web.Request, key: str, default: int = 0) -> int:
    """An integer query parameter (empty or absent -> default); 400 if it is not an integer."""
    raw = request.query.get(key, "")
    if raw == "":
        return default
    try:
        return int(raw, 10)
    except ValueError:
        raise InvalidParameter(f"invalid value for {key!r}: {raw!r} is not an integer") from None


def query_filters(request: web.Request) -> dict[str, list[str]]:
    """Docker's ``filters`` parameter: ``{"name": {"value": true}}`` or the legacy ``{"name": ["value"]}``."""
    raw = request.query.get("filters", "")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidParameter("invalid filter") from None
    if not isinstance(data, dict):
        raise InvalidParameter("invalid filter")
    out: dict[str, list[str]] = {}
    for name, values in data.items():
        if isinstance(values, dict) and all(isinstance(v, bool) for v in values.values()):
            out[name] = [str(v) for v in values]
        elif isinstance(values, list) and all(isinstance(v, str) for v in values):
            out[name] = list(values)
        else:
            raise InvalidParameter(f"invalid filter '{name}'")
    return out
